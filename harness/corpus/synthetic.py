"""The harness's own corpus in NAB's layout, generated from a seed instead of committed as data files.

Why: tests, demos and first runs need a labelled corpus without downloading NAB. Every anomaly kind NAB
contains (spikes, level shifts, drifts, flat-lines, noise bursts, seasonality changes) gets at least one file,
plus files with none, so a detector's false positives cost something too. Windows are sized and placed the
way NAB places them, so the scorer treats this corpus exactly like the real one.

Output is byte-identical for a given (seed, n_rows): each file draws from its own generator seeded with
[seed, file index], and values are written with a fixed number of decimals.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.atomic import public_mode, write_bytes
from harness.cache import cache_root
from harness.corpus.layout import TYPES_FILE
from harness.errors import InputError
from harness.scoring.nab import WINDOW_SHARE

GENERATOR_VERSION = 2  # bump whenever the output changes, so cached corpora are rebuilt

START = np.datetime64("2026-01-01T00:00:00", "s")
STEP = np.timedelta64(300, "s")  # 5 minutes
PERIOD = 288  # rows per day
MIN_ROWS = 500


KIND_NAMES = {"spike": "spike", "shift": "level_shift", "drift": "drift", "flatline": "flatline", "noise": "noise_burst",
              "frequency": "frequency_change"}  # as labels/anomaly_types.json names them (harness.corpus.inject)


@dataclass(frozen=True)
class _Anomaly:
    kind: str  # spike | shift | drift | flatline | noise | frequency
    at: float  # start, as a share of the file's rows (jittered by up to 1%)
    span: float = 0.0  # duration as a share of rows; 0 = a spike's points, or to the end for shift/drift holds
    points: int = 1  # spike width in rows


@dataclass(frozen=True)
class _Spec:
    name: str  # relative path under data/
    level: float
    amp: float  # daily amplitude
    sigma: float  # noise
    trend: float = 0.0  # total rise over the file
    anomalies: tuple[_Anomaly, ...] = ()


_A = "synthWithAnomaly"
_N = "synthNoAnomaly"
_SPECS: tuple[_Spec, ...] = (
    _Spec(f"{_A}/spike_single.csv", 50.0, 10.0, 1.0, anomalies=(_Anomaly("spike", 0.60),)),
    _Spec(
        f"{_A}/spikes_multiple.csv",
        80.0,
        15.0,
        1.5,
        trend=20.0,
        anomalies=(_Anomaly("spike", 0.30), _Anomaly("spike", 0.55, points=3), _Anomaly("spike", 0.80)),
    ),
    _Spec(f"{_A}/level_shift.csv", 60.0, 8.0, 1.0, anomalies=(_Anomaly("shift", 0.50),)),
    _Spec(f"{_A}/drift.csv", 40.0, 6.0, 0.8, anomalies=(_Anomaly("drift", 0.45, span=0.07),)),
    _Spec(f"{_A}/flatline.csv", 70.0, 12.0, 1.2, anomalies=(_Anomaly("flatline", 0.55, span=0.04),)),
    _Spec(f"{_A}/noise_burst.csv", 55.0, 9.0, 0.7, anomalies=(_Anomaly("noise", 0.50, span=0.03),)),
    _Spec(f"{_A}/frequency_change.csv", 45.0, 10.0, 0.8, anomalies=(_Anomaly("frequency", 0.40, span=0.06),)),
    _Spec(
        f"{_A}/spike_and_flatline.csv",
        65.0,
        10.0,
        1.0,
        anomalies=(_Anomaly("spike", 0.35, points=2), _Anomaly("flatline", 0.70, span=0.03)),
    ),
    _Spec(
        f"{_A}/shift_noise_spike.csv",
        90.0,
        12.0,
        1.0,
        trend=-15.0,
        anomalies=(_Anomaly("shift", 0.30, span=0.05), _Anomaly("noise", 0.55, span=0.03), _Anomaly("spike", 0.80)),
    ),
    _Spec(
        f"{_A}/frequency_and_drift.csv",
        50.0,
        8.0,
        0.8,
        anomalies=(_Anomaly("frequency", 0.35, span=0.05), _Anomaly("drift", 0.70, span=0.05)),
    ),
    _Spec(f"{_N}/periodic_noise.csv", 50.0, 10.0, 1.0),
    _Spec(f"{_N}/trend_noise.csv", 30.0, 0.0, 1.5, trend=25.0),
    _Spec(f"{_N}/pure_noise.csv", 20.0, 0.0, 2.0),
)


def generator_hash() -> str:
    """Short digest of the generator's version and file table: names the cache folder."""
    return hashlib.sha256(f"{GENERATOR_VERSION}:{_SPECS!r}".encode()).hexdigest()[:10]


def generate(seed: int = 7, n_rows: int = 4032) -> dict[str, bytes]:
    """Every file of the corpus as {path relative to the corpus root: bytes}, identical for equal arguments."""
    _check_args(seed, n_rows)
    stamps = np.char.replace((START + STEP * np.arange(n_rows)).astype(str), "T", " ")
    files: dict[str, bytes] = {}
    windows: dict[str, list[list[str]]] = {}
    points: dict[str, list[str]] = {}
    for index, spec in enumerate(_SPECS):
        values, starts = _series(spec, np.random.default_rng([seed, index]), n_rows)
        body = "\n".join(f"{t},{v:.4f}" for t, v in zip(stamps.tolist(), values.tolist()))
        files[f"data/{spec.name}"] = f"timestamp,value\n{body}\n".encode()
        windows[spec.name] = [[f"{stamps[lo]}.000000", f"{stamps[hi]}.000000"] for lo, hi in _windows(starts, n_rows)]
        points[spec.name] = [str(stamps[a]) for a in starts]
    files["labels/combined_windows.json"] = (json.dumps(windows, indent=4) + "\n").encode()
    files["labels/combined_labels.json"] = (json.dumps(points, indent=4) + "\n").encode()
    files[TYPES_FILE.as_posix()] = (json.dumps({s.name: [KIND_NAMES[a.kind] for a in s.anomalies] for s in _SPECS}, indent=4) + "\n").encode()
    return files


def write_corpus(dest: str | Path, seed: int = 7, n_rows: int = 4032) -> Path:
    """Write the corpus to `dest` all at once: built in a sibling temporary folder, then renamed into place,
    so an interrupted run never leaves a half-written corpus that would later pass for a complete one."""
    dest = Path(dest)
    check_free(dest)
    return write_tree(dest, generate(seed, n_rows))


def write_tree(dest: Path, files: dict[str, bytes]) -> Path:
    """Write {relative path: bytes} as the folder `dest`, whole or not at all (a sibling temporary folder
    renamed into place); `dest` must be absent or an empty folder."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        for rel, data in files.items():
            write_bytes(tmp / rel, data)
        os.chmod(tmp, public_mode(folder=True))  # mkdtemp makes it private; a corpus is ordinary data
        try:
            os.replace(tmp, dest)  # replaces dest only if it is (still) an empty folder
        except OSError:
            check_free(dest)  # someone filled or created it meanwhile: say so in the usual words
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def cached_corpus_root(seed: int = 7, n_rows: int = 4032) -> Path:
    """The corpus materialised once per (seed, n_rows, generator) in the cache folder, then reused.

    Concurrent callers may both build it; the loser of the final rename discards its copy and uses the winner's.
    """
    root = cache_root() / f"synthetic-{seed}-{n_rows}-{generator_hash()}"
    if _complete(root):
        return root
    try:
        return write_corpus(root, seed, n_rows)
    except InputError:
        if _complete(root):  # another process finished first
            return root
        raise


def _complete(root: Path) -> bool:
    """A corpus folder only appears by rename once fully written, so its label file marks it complete."""
    return (root / "labels" / "combined_windows.json").is_file()


def check_free(dest: Path) -> None:
    if dest.is_dir():
        if any(dest.iterdir()):
            raise InputError("already exists and is not empty; choose another folder", dest)
    elif dest.exists() or dest.is_symlink():
        raise InputError("already exists and is not a folder; choose another folder", dest)


def _check_args(seed: int, n_rows: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < MIN_ROWS:
        raise InputError(f"n_rows must be an integer of at least {MIN_ROWS}, got {n_rows!r}")


def _windows(starts: list[int], n_rows: int) -> list[tuple[int, int]]:
    """NAB's windows: floor(10% of rows / anomalies) rows each, centred on each anomaly's start, clipped."""
    if not starts:
        return []
    length = int(WINDOW_SHARE * n_rows / len(starts))
    out = []
    for a in starts:
        lo = a - length // 2
        out.append((max(lo, 0), min(lo + length - 1, n_rows - 1)))
    return out


def _series(spec: _Spec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[int]]:
    """One file's values and its anomalies' start rows.

    The daily cycle is built from an instantaneous frequency so a seasonality change stays continuous.
    """
    t = np.arange(n)
    freq = np.full(n, 1.0 / PERIOD)
    phase0 = rng.uniform(0, 2 * np.pi)
    noise = rng.normal(0.0, spec.sigma, n)
    jitter = max(n // 100, 1)
    starts = [int(a.at * n) + int(rng.integers(-jitter, jitter + 1)) for a in spec.anomalies]
    signs = rng.choice([-1.0, 1.0], size=len(spec.anomalies))
    for a, s in zip(spec.anomalies, starts):
        if a.kind == "frequency":
            freq[s : s + _span(a, n)] = 6.0 / PERIOD  # four-hour cycle instead of a daily one
    seasonal = spec.amp * np.sin(phase0 + 2 * np.pi * np.concatenate(([0.0], np.cumsum(freq)[:-1])))
    x = spec.level + spec.trend * t / n + seasonal + noise
    for a, s, sign in zip(spec.anomalies, starts, signs):
        _inject(x, a, s, float(sign), spec, rng, n)
    return x, starts


def _span(a: _Anomaly, n: int) -> int:
    return max(int(a.span * n), 1)


def _inject(x: np.ndarray, a: _Anomaly, s: int, sign: float, spec: _Spec, rng: np.random.Generator, n: int) -> None:
    """Apply one anomaly in place, sized from the file's own amplitude and noise so it stands out."""
    if a.kind == "spike":
        x[s : s + a.points] += sign * (0.8 * spec.amp + 10 * spec.sigma)
    elif a.kind == "shift":
        end = s + _span(a, n) if a.span else n
        x[s:end] += sign * (0.6 * spec.amp + 5 * spec.sigma)
    elif a.kind == "drift":
        ramp = _span(a, n)
        delta = sign * (spec.amp + 6 * spec.sigma)
        x[s : s + ramp] += np.linspace(0.0, delta, ramp)
        x[s + ramp :] += delta
    elif a.kind == "flatline":
        x[s : s + _span(a, n)] = x[s]
    elif a.kind == "noise":
        x[s : s + _span(a, n)] += rng.normal(0.0, 5 * spec.sigma, _span(a, n))
    elif a.kind == "frequency":
        pass  # applied to the seasonal component in _series
    else:
        raise ValueError(f"unknown anomaly kind {a.kind!r}")
