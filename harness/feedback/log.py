"""The review log of a run (`review/log.csv`): every alert event of every ok cell, and at the end every labelled
window that closed without one, for people (or `harness feedback simulate`) to judge.

A cell's alerts are those of its NAB standard threshold (optimised, or from the scenario's thresholds file), the
threshold the table reports; events are cut as `harness.feedback.loop` cuts them. The log is rebuilt from the
cells' scores at every render, and verdicts already in it are kept (matched by `id`), so resuming a run never
loses a reviewer's work. Verdicts: `anomaly` or `normal` (for a missed window: the label is right, or wrong);
`verdict_at` is the event time from which a feedback policy may use the verdict. The file's format (CSV, one
`Entry` a row) is harness.results.review_log's, which the run folder reads and writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from harness.corpus.layout import SeriesFile
from harness.feedback.loop import NOBODY, FeedbackThreshold, Verdict
from harness.results.review_log import ALERT, MISSED, Entry, seconds_of, stamp
from harness.scoring.nab import alert_block_rows, probation_rows
from harness.thresholds.evaluate import event_seconds


def build_entries(cell: str, detector: str, policy_name: str, threshold: float, files: Sequence[SeriesFile],
                  scores: Sequence[np.ndarray], probation_percent: float) -> list[Entry]:
    """One cell's alert events and missed windows, unjudged."""
    policy = FeedbackThreshold(threshold=threshold)
    entries = []
    for f, s in zip(files, scores):
        t = event_seconds(f)
        s = np.asarray(s, np.float64)
        first = probation_rows(f.n_rows, probation_percent)
        events: dict[int, int] = {}
        alerts = policy.apply(t, s, NOBODY, alert_block_rows(f), first, events)
        missed = [(int(lo), int(hi)) for lo, hi in f.windows if hi >= first and not alerts[lo : hi + 1].any()]
        # in the order a reviewer would be asked: an alert when it starts, a missed window when it ends
        spans = sorted([(a, ALERT, a, b) for a, b in events.items()] + [(hi, MISSED, lo, hi) for lo, hi in missed])
        for _, kind, lo, hi in spans:
            entries.append(Entry(
                id=f"{cell}|{f.name}|{kind}|{lo}", cell=cell, detector=detector, policy=policy_name,
                threshold=threshold, stream=f.name, kind=kind, first_row=lo, last_row=hi,
                time=stamp(t[lo]), end_time=stamp(t[hi]), score=float(s[lo : hi + 1].max()),
            ))
    return entries


def merged(fresh: list[Entry], previous: list[Entry]) -> list[Entry]:
    """The rebuilt log with the verdicts of the previous one carried over, by id; judged entries of cells not
    rebuilt (no longer ok) are kept as they were."""
    judged = {e.id: e for e in previous if e.judged}
    for e in fresh:
        old = judged.get(e.id)
        if old is not None:
            e.verdict, e.verdict_at, e.reviewer = old.verdict, old.verdict_at, old.reviewer
    rebuilt = {e.cell for e in fresh}
    return fresh + [e for e in judged.values() if e.cell not in rebuilt]


def verdicts_of(entries: Iterable[Entry], stream: str) -> list[Verdict]:
    """The judged entries of one stream as verdicts a feedback policy can replay (no verdict_at: at once)."""
    out = []
    for e in entries:
        if e.stream == stream and e.judged:
            at = seconds_of(e.verdict_at, "verdict_at") if e.verdict_at else seconds_of(e.time, "time")
            out.append(Verdict(at, e.kind, e.first_row, e.last_row, e.verdict == "anomaly"))
    return out
