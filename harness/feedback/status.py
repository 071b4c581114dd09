"""How far behind the reviewers are, per cell of a run: the review log's entries whose verdict has not arrived,
the age of the oldest of them, and the reviewer delay beyond which feedback stopped helping (from the last
`harness feedback evaluate`). A feedback policy is only as good as its verdicts are early (docs/thresholds.md:
the benefit shrinks with the delay), so the age of the backlog is what an operations team watches
(`harness feedback status RUN --metrics-file`, alert HarnessFeedbackLate, docs/playbooks.md).

Ages are in event time: each stream's clock is its newest record (a replayed corpus, a live stream alike), or
`now` when given (a live service, whose streams are at the wall clock).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from harness.feedback.review import ReviewRun, parse_delay
from harness.results.review_log import ALERT, Entry, seconds_of
from harness.thresholds.evaluate import event_seconds


@dataclass
class CellStatus:
    cell: str
    entries: int
    pending: int  # no verdict, or one that has not arrived by the stream's clock
    oldest_pending_age_s: float  # 0 when nothing is pending
    median_delay_s: float | None  # of the judged entries: verdict_at - when the reviewer could first judge it
    useful_delay_s: float | None  # the longest evaluated delay at which feedback still helped; None: not evaluated, or never helped

    @property
    def late(self) -> bool:
        """Verdicts are later than feedback helps: the backlog is older than the useful delay."""
        return self.useful_delay_s is not None and self.oldest_pending_age_s > self.useful_delay_s


def asked_at(e: Entry) -> float:
    """When a reviewer can first judge an entry: an alert when it starts, a missed window when it closes (as
    `feedback import` dates verdicts)."""
    return seconds_of(e.time if e.kind == ALERT else e.end_time, e.id)


def status(run: ReviewRun, entries: list[Entry], now: float | None = None) -> list[CellStatus]:
    """Each reviewable cell's backlog, ages measured at `now` or at each stream's newest record."""
    clock = {f.name: float(event_seconds(f)[-1]) if f.n_rows else 0.0 for f in run.corpus.files}
    useful = useful_delays(run.folder.read_feedback() or [])
    out = []
    for c in run.cells:
        mine = [e for e in entries if e.cell == c.id]
        ages, delays = [], []
        for e in mine:
            t = clock.get(e.stream, 0.0) if now is None else now
            if asked_at(e) > t:  # not raised yet at that time
                continue
            arrives = seconds_of(e.verdict_at, e.id) if e.judged and e.verdict_at else None
            if e.judged:
                delays.append((arrives if arrives is not None else asked_at(e)) - asked_at(e))
            if not e.judged or (arrives is not None and arrives > t):
                ages.append(max(0.0, t - asked_at(e)))
        out.append(CellStatus(c.id, len(mine), len(ages), max(ages, default=0.0),
                              statistics.median(delays) if delays else None, useful.get(c.id)))
    return out


def useful_delays(rows: list[dict[str, str]]) -> dict[str, float]:
    """Per cell, the longest simulated delay of a `feedback evaluate` table at which the feedback policy still had
    fewer false-positive events than none and no lower NAB standard; cells where it never helped are left out."""
    out: dict[str, float] = {}
    for r in rows:
        if not r.get("feedback", "").startswith("simulated") or not r.get("delay"):
            continue
        if float(r["fp_events_change_pct"]) < 0 and float(r["nab_delta"]) >= 0:
            out[r["cell"]] = max(out.get(r["cell"], 0.0), parse_delay(r["delay"]))
    return out


def prometheus_text(scenario: str, cells: list[CellStatus]) -> bytes:
    """The backlog as Prometheus' text format (node_exporter's textfile collector reads it)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    labels = ["scenario", "cell"]
    pending = Gauge("harness_feedback_pending_entries", "review-log entries whose verdict has not arrived", labels, registry=registry)
    age = Gauge("harness_feedback_oldest_pending_age_seconds", "event time since the oldest entry without an arrived "
                "verdict could first be judged (0: none pending)", labels, registry=registry)
    useful = Gauge("harness_feedback_useful_delay_seconds", "the longest reviewer delay at which feedback still helped "
                   "(harness feedback evaluate); absent: not evaluated, or it never helped", labels, registry=registry)
    for c in cells:
        pending.labels(scenario, c.cell).set(c.pending)
        age.labels(scenario, c.cell).set(c.oldest_pending_age_s)
        if c.useful_delay_s is not None:
            useful.labels(scenario, c.cell).set(c.useful_delay_s)
    return generate_latest(registry)


def write_metrics(path: str | Path, scenario: str, cells: list[CellStatus]) -> None:
    from harness.atomic import write_bytes
    from harness.errors import InputError

    try:
        write_bytes(path, prometheus_text(scenario, cells))
    except OSError as exc:
        raise InputError(f"cannot write the metrics file ({exc.strerror or exc})", path, "--metrics-file") from None
