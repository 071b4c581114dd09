"""Synthetic anomalies on any corpus: spikes, level shifts, drifts, noise bursts and flat-lines planted into a
corpus's files (NAB's or the embedded one), each with a NAB-sized window and its kind, so that a run reports
recall per anomaly kind (`recall_by_kind`) and a user learns what a detector misses.

The output is a new corpus folder in NAB's layout, written whole or not at all: the source's data with the
anomalies planted, its windows plus the new ones (`labels/combined_windows.json`), every window's kind
(`labels/anomaly_types.json`; the source's own windows are `labelled` unless it names their kinds) and its
`config/`. Anomalies go after the probationary rows, clear of every window, sized from the file's own noise
and spread; the same seed gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.corpus.layout import LABELS, TYPES_FILE, Corpus
from harness.errors import InputError
from harness.scoring.nab import WINDOW_SHARE, probation_rows

KINDS = ("spike", "level_shift", "drift", "noise_burst", "flatline")
LABELLED = "labelled"  # the kind of a source window whose kind the source does not name


def _scale(values: np.ndarray) -> float:
    """How big an anomaly must be to stand out here: six times the noise (from first differences, robust to
    trend and season) or a third of the spread of the values, whichever is larger."""
    noise = 1.4826 * float(np.median(np.abs(np.diff(values) - np.median(np.diff(values))))) / np.sqrt(2) if len(values) > 2 else 0.0
    spread = float(np.percentile(values, 95) - np.percentile(values, 5))
    return max(6.0 * noise, spread / 3.0, 1e-6 * max(1.0, float(np.abs(values).max())))


def plant(values: np.ndarray, kind: str, at: int, length: int, rng: np.random.Generator) -> None:
    """One anomaly in place: it starts at row `at`; extended kinds last `length` rows (a shift and a drift's
    new level persist)."""
    size = _scale(values) * rng.uniform(1.0, 1.5)
    sign = float(rng.choice([-1.0, 1.0]))
    if kind == "spike":
        values[at : at + int(rng.integers(1, 4))] += sign * size
    elif kind == "level_shift":
        values[at:] += sign * size
    elif kind == "drift":
        ramp = np.linspace(0.0, sign * size, length)
        values[at : at + length] += ramp[: len(values[at : at + length])]
        values[at + length :] += sign * size
    elif kind == "noise_burst":
        values[at : at + length] += rng.normal(0.0, size / 2.0, len(values[at : at + length]))
    elif kind == "flatline":
        values[at : at + length] = values[at]
    else:
        raise ValueError(f"unknown anomaly kind {kind!r} (known: {', '.join(KINDS)})")


def _places(n: int, taken: np.ndarray, want: int, width: int, first: int, rng: np.random.Generator) -> list[int]:
    """Up to `want` anomaly rows whose windows (`width` rows centred on them) lie after `first` and clear of
    the `taken` windows and of each other."""
    free = np.ones(n, bool)
    free[: first + width // 2] = False
    free[n - width // 2 - 1 :] = False
    out: list[int] = []
    for lo, hi in taken:
        free[max(lo - width // 2 - 1, 0) : hi + width // 2 + 2] = False
    for _ in range(want):
        candidates = np.flatnonzero(free)
        if not len(candidates):
            break
        at = int(rng.choice(candidates))
        out.append(at)
        free[max(at - width - 1, 0) : at + width + 2] = False
    return sorted(out)


def inject(corpus: Corpus, anomaly_kinds: Sequence[str] = KINDS, per_file: int = 1, seed: int = 0,
           probation_percent: float = 0.15) -> tuple[dict[str, bytes], dict[str, int]]:
    """The planted corpus as {relative path: bytes}, and how many anomalies of each kind went in. Kinds are
    dealt round-robin over the files' anomaly slots, so every kind gets its share."""
    unknown = [k for k in anomaly_kinds if k not in KINDS]
    if unknown or not anomaly_kinds:
        raise InputError(f"unknown anomaly kind {unknown[0]!r}; expected some of {', '.join(KINDS)}" if unknown else "expected at least one anomaly kind")
    if per_file < 1:
        raise InputError(f"expected at least 1 anomaly per file, got {per_file}")
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    windows: dict[str, list[list[str]]] = {}
    types: dict[str, list[str]] = {}
    counts = {k: 0 for k in anomaly_kinds}
    slot = 0
    for f in corpus.files:
        assert f.values is not None and f.timestamps is not None, "inject needs a corpus loaded with its values"
        values = f.values.copy()
        n = f.n_rows
        width = max(int(WINDOW_SHARE * n / (len(f.windows) + per_file)), 8)
        at = _places(n, f.windows, per_file, width, probation_rows(n, probation_percent), rng)
        planted = []
        for a in at:
            kind = anomaly_kinds[slot % len(anomaly_kinds)]
            slot += 1
            plant(values, kind, a, max(width // 4, 2), rng)
            counts[kind] += 1
            planted.append(((max(a - width // 2, 0), min(a - width // 2 + width - 1, n - 1)), kind))
        own = list(zip([tuple(w) for w in f.windows], f.anomaly_kinds or [LABELLED] * len(f.windows)))
        both = sorted(own + planted)
        stamps = np.char.replace(f.timestamps.astype(str), "T", " ")
        windows[f.name] = [[f"{stamps[lo]}.000000", f"{stamps[hi]}.000000"] for (lo, hi), _ in both]
        types[f.name] = [k for _, k in both]
        body = "\n".join(f"{t},{v!r}" for t, v in zip(stamps.tolist(), values.tolist()))
        files[f"data/{f.name}"] = f"timestamp,value\n{body}\n".encode()
    files[LABELS.as_posix()] = (json.dumps(windows, indent=4) + "\n").encode()
    files[TYPES_FILE.as_posix()] = (json.dumps(types, indent=4) + "\n").encode()
    assert corpus.root is not None
    for extra in sorted((corpus.root / "config").glob("*.json")):
        files[f"config/{extra.name}"] = extra.read_bytes()
    return files, counts


def recall_by_kind(windows: Sequence[np.ndarray], anomaly_kinds: Sequence[Sequence[str]], alerts: Sequence[np.ndarray],
                   first_rows: Sequence[int]) -> dict[str, tuple[int, int]]:
    """{kind: (windows detected, windows)}: a window is detected when an alert falls in it (after the
    probationary rows, as NAB counts)."""
    out: dict[str, list[int]] = {}
    for w, ks, a, first in zip(windows, anomaly_kinds, alerts, first_rows):
        for (lo, hi), k in zip(w, ks):
            if hi < first:
                continue
            hit = bool(np.any(a[max(lo, first) : hi + 1]))
            out.setdefault(k, [0, 0])
            out[k][0] += hit
            out[k][1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}


def write_injected(dest: str | Path, files: dict[str, bytes]) -> Path:
    """The planted corpus as the folder `dest` (absent or empty), whole or not at all."""
    from harness.corpus.synthetic import check_free, write_tree

    dest = Path(dest)
    check_free(dest)
    try:
        return write_tree(dest, files)
    except OSError as exc:
        raise InputError(f"could not write the corpus ({exc.strerror or exc})", dest) from None
