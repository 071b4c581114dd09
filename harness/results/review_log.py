"""The review log's file format (`review/log.csv`): one `Entry` a row, as CSV. The run folder reads and writes it
(harness.results.folder); harness.feedback.log builds and merges its entries, and the review loop judges them.

Kinds: `alert` (an alert event) or `missed` (a labelled window that closed without one). Verdicts: `anomaly` or
`normal`; `verdict_at` is the event time from which a feedback policy may use the verdict.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from harness.errors import InputError

ALERT, MISSED = "alert", "missed"
VERDICTS = ("anomaly", "normal")


@dataclass
class Entry:
    id: str
    cell: str
    detector: str
    policy: str
    threshold: float
    stream: str
    kind: str  # alert | missed
    first_row: int
    last_row: int
    time: str
    end_time: str
    score: float  # an alert event's highest score; a missed window's highest score (how close it came)
    verdict: str = ""
    verdict_at: str = ""
    reviewer: str = ""

    @property
    def judged(self) -> bool:
        return bool(self.verdict)


COLUMNS = [f.name for f in fields(Entry)]


def stamp(seconds: float) -> str:
    return str(np.datetime64(int(seconds), "s")).replace("T", " ")


def seconds_of(stamp: str, where: str) -> float:
    try:
        return float(np.datetime64(stamp.replace(" ", "T"), "s").astype(np.int64))
    except ValueError:
        raise InputError(f"expected a time like 2014-04-10 07:15:00, got {stamp!r}", where) from None


def render(entries: Iterable[Entry]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    for e in entries:
        w.writerow({**asdict(e), "threshold": repr(e.threshold), "score": repr(e.score)})
    return buf.getvalue()


def parse(text: str, path: Path) -> list[Entry]:
    """A review log's entries; one InputError naming the file and row for anything else."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or [c for c in COLUMNS if c not in reader.fieldnames]:
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        raise InputError(f"not a review log: missing columns {', '.join(missing)}", path)
    out = []
    for n, row in enumerate(reader, start=2):
        where = f"line {n}"
        try:
            e = Entry(**{**{c: row[c] for c in COLUMNS}, "threshold": float(row["threshold"]), "score": float(row["score"]),
                         "first_row": int(row["first_row"]), "last_row": int(row["last_row"])})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: {exc}", path) from None
        if e.kind not in (ALERT, MISSED):
            raise InputError(f"{where}: kind must be {ALERT} or {MISSED}, got {e.kind!r}", path)
        if e.verdict and e.verdict not in VERDICTS:
            raise InputError(f"{where}: verdict must be empty, {' or '.join(VERDICTS)}, got {e.verdict!r}", path)
        if e.verdict and e.verdict_at:
            seconds_of(e.verdict_at, f"{path}: {where}: verdict_at")
        out.append(e)
    return out
