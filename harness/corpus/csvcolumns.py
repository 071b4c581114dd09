"""Read one column of a plain CSV (no quoting) as fast as numpy allows.

Why not pandas: `harness nab score` must finish as a whole process in well under a second, and importing
pandas alone costs ~0.4 s on a 2-core machine. NAB's files are simple `a,b,c` lines, so the column can be
cut out with vectorised byte arithmetic; irregular files fall back to the csv module.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from harness.errors import InputError


def read_header(raw: bytes) -> list[str]:
    first = raw.split(b"\n", 1)[0].rstrip(b"\r")
    return [h.strip().decode("utf-8", "replace") for h in first.split(b",")]


def line_count(raw: bytes) -> int:
    """Data rows after the header, tolerating CRLF and a missing trailing newline."""
    n = raw.count(b"\n")
    if raw and not raw.endswith(b"\n"):
        n += 1
    return max(n - 1, 0)


def column_bytes(raw: bytes, name: str, path: Path | str) -> np.ndarray:
    """The named column as a numpy bytes array (one entry per data row)."""
    header = read_header(raw)
    if name not in header:
        raise InputError(f"no column {name!r} (header is {','.join(header)})", path)
    k, ncols = header.index(name), len(header)
    buf = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    ends = newlines if raw.endswith(b"\n") else np.append(newlines, len(raw))
    starts = np.concatenate(([0], newlines + 1))[: len(ends)]
    starts, ends = starts[1:], ends[1:]
    ends = ends - (buf[np.maximum(ends - 1, 0)] == 13)  # drop CR of CRLF
    n = len(starts)
    header_end = int(newlines[0]) if len(newlines) else len(raw)
    commas = np.flatnonzero(buf[header_end:] == 44) + header_end
    if n == 0:
        return np.array([], dtype="S1")
    if len(commas) != n * (ncols - 1) or b'"' in raw:
        return _column_bytes_slow(raw, k, ncols, path)
    commas = commas.reshape(n, ncols - 1)
    if ncols > 1 and (np.any(commas[:, 0] < starts) or np.any(commas[:, -1] >= ends + 1)):
        return _column_bytes_slow(raw, k, ncols, path)
    lo = starts if k == 0 else commas[:, k - 1] + 1
    hi = ends if k == ncols - 1 else commas[:, k]
    width = hi - lo
    size = max(int(width.max()), 1)
    offsets = np.arange(size)
    idx = np.minimum(lo[:, None] + offsets, len(buf) - 1)
    chars = np.where(offsets < width[:, None], buf[idx], 0).astype(np.uint8)
    return np.ascontiguousarray(chars).view(f"S{size}").ravel()


def _column_bytes_slow(raw: bytes, k: int, ncols: int, path: Path | str) -> np.ndarray:
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8", "replace"))))[1:]
    out = []
    for i, row in enumerate(rows):
        if not row:
            continue
        if len(row) != ncols:
            raise InputError(f"row {i + 1} has {len(row)} fields, the header has {ncols}", path)
        out.append(row[k].encode())
    return np.array(out, dtype="S") if out else np.array([], dtype="S1")


def float_column(raw: bytes, name: str, path: Path | str) -> np.ndarray:
    """The named column as float64; a non-numeric or empty cell names its row."""
    cells = column_bytes(raw, name, path)
    try:
        return cells.astype(np.float64)
    except ValueError:
        for i, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                raise InputError(
                    f"row {i + 1}, column {name!r}: expected a number, got {cell.decode(errors='replace')!r}",
                    path,
                ) from None
        raise
