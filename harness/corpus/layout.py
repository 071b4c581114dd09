"""Load a corpus in NAB's layout: `data/<category>/<name>.csv` (timestamp,value) and
`labels/combined_windows.json` ({relative path: [[start, end], ...]}).

Rows are matched to windows by position: a window starts at the first row whose timestamp equals its start and
ends at the first row whose timestamp equals its end, exactly as NAB's scorer does. That survives NAB's quirks
(CRLF, missing trailing newline, duplicated and backwards timestamps).

A corpus can be narrowed to some categories or files (`only`); NAB's normalisation then counts the windows of
those files only. Its `fingerprint` (a SHA-256 of the selected files' names and bytes, their labels and the
corpus's scoring profiles) says whether two runs scored the same data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.corpus.csvcolumns import column_bytes, float_column, line_count
from harness.errors import InputError

LABELS = Path("labels") / "combined_windows.json"
TYPES_FILE = Path("labels") / "anomaly_types.json"  # optional: {relative path: [the kind of each window, in order]}


@dataclass
class SeriesFile:
    """One data file: its length, its labelled windows as inclusive row positions, and (optionally) its series.

    Loaded for scoring only, it keeps the file's bytes instead of its series (`raw`), and `timestamps_at` reads
    just the rows it is asked for: `harness nab score` needs a few hundred timestamps, not 365,000."""

    name: str  # relative path under data/, e.g. "realKnownCause/nyc_taxi.csv"
    n_rows: int
    windows: np.ndarray  # int64, shape (k, 2): inclusive [start_row, end_row]
    timestamps: np.ndarray | None = None  # datetime64[s]
    values: np.ndarray | None = None  # float64
    raw: bytes | None = field(default=None, repr=False)
    anomaly_kinds: list[str] | None = None  # each window's anomaly kind (labels/anomaly_types.json), when the corpus has them

    def timestamps_at(self, rows) -> np.ndarray:
        """datetime64[s] of the given rows."""
        if self.timestamps is not None:
            return self.timestamps[np.asarray(rows)]
        assert self.raw is not None, "a SeriesFile without timestamps or bytes"
        ends = self._line_ends
        out = []
        for r in rows:
            line = self.raw[ends[r] + 1 : ends[r + 1]]
            out.append(np.datetime64(line.split(b",", 1)[0].strip().decode(), "s"))
        return np.array(out, dtype="datetime64[s]")

    @cached_property
    def _line_ends(self) -> np.ndarray:
        """Offsets of every newline, and the end of the bytes (a last line may lack its newline)."""
        assert self.raw is not None
        return np.append(np.flatnonzero(np.frombuffer(self.raw, np.uint8) == 10), len(self.raw))

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def stem(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass
class Corpus:
    files: list[SeriesFile]  # sorted by name
    root: Path | None = None
    label_windows: int = 0  # windows labelled in the selected files: NAB's "perfect" score counts all of them
    fingerprint: str = ""
    only: tuple[str, ...] = ()  # the categories / files it was narrowed to (empty: all of it)

    def file(self, name: str) -> SeriesFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def n_rows(self) -> int:
        return sum(f.n_rows for f in self.files)


def check_layout(root: str | Path) -> Path:
    """Fail with one clear line unless `root` looks like a corpus in NAB's layout."""
    root = Path(root)
    if not root.exists():
        raise InputError("corpus folder does not exist", root)
    if not root.is_dir():
        raise InputError("corpus must be a folder in NAB's layout (data/, labels/combined_windows.json)", root)
    if not (root / "data").is_dir():
        raise InputError("not in NAB's layout: no data/ folder", root)
    if not (root / LABELS).is_file():
        raise InputError(f"not in NAB's layout: no {LABELS.as_posix()}", root)
    return root


def read_labels(root: Path) -> dict[str, list[list[str]]]:
    path = root / LABELS
    try:
        labels = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"expected a JSON object of windows, could not parse it ({exc})", path) from None
    if not isinstance(labels, dict) or not labels:
        raise InputError("expected a non-empty JSON object {relative path: [[start, end], ...]}", path)
    for name, windows in labels.items():
        if not isinstance(windows, list) or any(
            not isinstance(w, list) or len(w) != 2 or not all(isinstance(t, str) for t in w) for w in windows
        ):
            raise InputError("expected a list of [start, end] timestamp pairs", path, name)
    return labels


def read_anomaly_kinds(root: Path, windows: dict[str, int]) -> dict[str, list[str]] | None:
    """labels/anomaly_types.json, checked against the windows (`windows`: file -> how many); None without one."""
    path = root / TYPES_FILE
    if not path.is_file():
        return None
    try:
        anomaly_kinds = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"expected a JSON object of anomaly kinds, could not parse it ({exc})", path) from None
    if not isinstance(anomaly_kinds, dict):
        raise InputError("expected a JSON object {relative path: [kind of each window, ...]}", path)
    for name, n in windows.items():
        got = anomaly_kinds.get(name, [])
        if not isinstance(got, list) or len(got) != n or not all(isinstance(k, str) and k for k in got):
            raise InputError(f"expected {n} kind name(s), one per window of {LABELS.as_posix()}", path, name)
    return anomaly_kinds


def select(names: Sequence[str], only: Sequence[str]) -> list[str]:
    """The labelled file names that `only` selects: each entry is a category (`realTraffic`) or a file
    (`realTraffic/speed_6005.csv`). ValueError naming the first entry that matches nothing."""
    if not only:
        return sorted(names)
    categories = sorted({n.split("/", 1)[0] for n in names})
    chosen = set()
    for entry in only:
        hits = [n for n in names if n == entry or n.split("/", 1)[0] == entry]
        if not hits:
            raise ValueError(
                f"{entry!r} is neither a category nor a labelled file of this corpus "
                f"(categories: {', '.join(categories)}; a file is written category/name.csv)"
            )
        chosen.update(hits)
    return sorted(chosen)


def load_corpus(root: str | Path, values: bool = True, only: Sequence[str] = ()) -> Corpus:
    """Read the labelled files (those `only` selects, else all). `values=False` skips the values: lengths,
    timestamps and window rows are what scoring needs."""
    root = check_layout(root)
    labels = read_labels(root)
    try:
        names = select(list(labels), only)
    except ValueError as exc:
        raise InputError(str(exc), root / LABELS) from None
    digest = hashlib.sha256()
    files = [_load_file(root, name, labels[name], values, digest) for name in names]
    digest.update(json.dumps({n: labels[n] for n in names}, sort_keys=True).encode())
    anomaly_kinds = read_anomaly_kinds(root, {f.name: len(f.windows) for f in files})
    if anomaly_kinds is not None:
        for f in files:
            f.anomaly_kinds = anomaly_kinds.get(f.name, [])
        digest.update(json.dumps({n: anomaly_kinds.get(n, []) for n in names}, sort_keys=True).encode())
    profiles = root / "config" / "profiles.json"
    if profiles.is_file():
        digest.update(profiles.read_bytes())
    return Corpus(
        files=files,
        root=root,
        label_windows=sum(len(labels[n]) for n in names),
        fingerprint=digest.hexdigest(),
        only=tuple(only),
    )


def _load_file(root: Path, name: str, windows: list[list[str]], values: bool, digest) -> SeriesFile:
    path = root / "data" / name
    if not path.is_file():
        raise InputError(f"labelled in {LABELS.as_posix()} but missing", path)
    raw = path.read_bytes()
    digest.update(f"{name}\0{len(raw)}\0".encode())
    digest.update(raw)
    n = line_count(raw)
    if n == 0:
        raise InputError("expected a header 'timestamp,value' and at least one row", path)
    stamps = series = None
    if values:
        stamps = _parse_timestamps(column_bytes(raw, "timestamp", path), path)
        series = float_column(raw, "value", path)
        bad = np.flatnonzero(~np.isfinite(series))
        if len(bad):
            raise InputError(f"row {int(bad[0]) + 1}: expected a finite value, got {series[bad[0]]}", path)
    rows = [tuple(_row_of(root, name, t, raw, stamps) for t in w) for w in windows]
    arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
    if len(arr) and (np.any(arr[:, 1] < arr[:, 0]) or np.any(arr[1:, 0] <= arr[:-1, 1])):
        raise InputError("windows must be in time order, each ending after it starts, without overlap", root / LABELS, name)
    return SeriesFile(name=name, n_rows=n, windows=arr, timestamps=stamps, values=series, raw=None if values else raw)


def _parse_timestamps(cells: np.ndarray, path: Path) -> np.ndarray:
    try:
        return cells.astype("datetime64[s]")
    except ValueError:
        for i, cell in enumerate(cells):
            try:
                np.datetime64(cell.decode(errors="replace"), "s")
            except ValueError:
                raise InputError(
                    f"row {i + 1}: expected a timestamp like 2014-07-01 00:00:00, got {cell.decode(errors='replace')!r}",
                    path,
                ) from None
        raise


def _row_of(root: Path, name: str, stamp: str, raw: bytes, stamps: np.ndarray | None) -> int:
    """Position of the first row whose timestamp equals `stamp` (NAB's timestamps.index); a label that is no
    timestamp, or names none of the file's, is the label file's fault. Without parsed timestamps, a search of
    the bytes for the usual spelling finds it; anything else parses the column."""
    try:
        when = np.datetime64(stamp.strip().replace("T", " "), "us")
    except ValueError:
        raise InputError(f"window timestamp {stamp!r} is not a timestamp", root / LABELS, name) from None
    if stamps is None:
        text = str(when.astype("datetime64[s]")).replace("T", " ")
        if when == np.datetime64(text, "us"):
            pos = raw.find(b"\n" + text.encode() + b",")
            if pos >= 0:
                return raw.count(b"\n", 0, pos)  # newlines before the row's own = header + earlier rows
        stamps = _parse_timestamps(column_bytes(raw, "timestamp", root / "data" / name), root / "data" / name)
    hits = np.flatnonzero(stamps.astype("datetime64[us]") == when)
    if not len(hits):
        raise InputError(f"window timestamp {stamp!r} does not occur in data/{name}", root / LABELS, name)
    return int(hits[0])
