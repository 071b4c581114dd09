"""Load a corpus in NAB's layout: `data/<category>/<name>.csv` (timestamp,value) and
`labels/combined_windows.json` ({relative path: [[start, end], ...]}).

Rows are matched to windows by position: a window starts at the first row whose timestamp equals its start and
ends at the first row whose timestamp equals its end, exactly as NAB's scorer does. That survives NAB's quirks
(CRLF, missing trailing newline, duplicated and backwards timestamps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.corpus.csvcolumns import column_bytes, float_column, line_count
from harness.errors import InputError

LABELS = Path("labels") / "combined_windows.json"


@dataclass
class SeriesFile:
    """One data file: its length, its labelled windows as inclusive row positions, and (optionally) its series."""

    name: str  # relative path under data/, e.g. "realKnownCause/nyc_taxi.csv"
    n_rows: int
    windows: np.ndarray  # int64, shape (k, 2): inclusive [start_row, end_row]
    timestamps: np.ndarray | None = None  # datetime64[s]
    values: np.ndarray | None = None  # float64

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
    label_windows: int = 0  # windows in the label file: NAB's "perfect" score counts all of them
    extras: dict = field(default_factory=dict)

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


def load_corpus(root: str | Path, series: bool = True) -> Corpus:
    """Read every labelled file. `series=False` reads only lengths and window rows (what scoring needs)."""
    root = check_layout(root)
    labels = read_labels(root)
    files = [_load_file(root, name, windows, series) for name, windows in sorted(labels.items())]
    return Corpus(files=files, root=root, label_windows=sum(len(w) for w in labels.values()))


def _load_file(root: Path, name: str, windows: list[list[str]], series: bool) -> SeriesFile:
    path = root / "data" / name
    if not path.is_file():
        raise InputError(f"labelled in {LABELS.as_posix()} but missing", path)
    raw = path.read_bytes()
    n = line_count(raw)
    if n == 0:
        raise InputError("expected a header 'timestamp,value' and at least one row", path)
    stamps = None
    if series:
        stamps = _parse_timestamps(column_bytes(raw, "timestamp", path), path)
        values = float_column(raw, "value", path)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise InputError(f"row {int(bad[0]) + 1}: expected a finite value, got {values[bad[0]]}", path)
    else:
        values = None
    rows = [_window_rows(raw, path, w, stamps) for w in windows]
    arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
    if len(arr) and (np.any(arr[:, 1] < arr[:, 0]) or np.any(arr[1:, 0] <= arr[:-1, 1])):
        raise InputError("windows must be in time order, each ending after it starts, without overlap", path)
    return SeriesFile(name=name, n_rows=n, windows=arr, timestamps=stamps, values=values)


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


def _window_rows(raw: bytes, path: Path, window: list[str], stamps: np.ndarray | None) -> tuple[int, int]:
    return tuple(_row_of(raw, path, t, stamps) for t in window)  # type: ignore[return-value]


def _row_of(raw: bytes, path: Path, stamp: str, stamps: np.ndarray | None) -> int:
    """Position of the first row whose timestamp equals `stamp` (NAB's timestamps.index)."""
    try:
        when = np.datetime64(stamp.strip().replace("T", " "), "us")
    except ValueError:
        raise InputError(f"window timestamp {stamp!r} is not a timestamp", path) from None
    if stamps is None:
        text = str(when.astype("datetime64[s]")).replace("T", " ")
        if when == np.datetime64(text, "us"):
            pos = raw.find(b"\n" + text.encode() + b",")
            if pos >= 0:
                return raw.count(b"\n", 0, pos)  # newlines before the row's own = header + earlier rows
        stamps = _parse_timestamps(column_bytes(raw, "timestamp", path), path)
    hits = np.flatnonzero(stamps.astype("datetime64[us]") == when)
    if not len(hits):
        raise InputError(f"window timestamp {stamp!r} does not occur in the file", path)
    return int(hits[0])
