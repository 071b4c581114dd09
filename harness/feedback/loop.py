"""The feedback loop on one stream: a threshold that learns from reviewers' verdicts, using only the verdicts
that have *arrived* by each record's event time.

An alert event is a run of consecutive alerts (cut into blocks of a window's length, as NAB counts false-positive
events). A reviewer is asked about each event when it starts, and about each labelled window that closes without
an alert; its verdict (anomaly or normal) arrives some event time later. The policy (`FeedbackThreshold`):

- a confirmed **false positive** (an alert event judged normal) silences the scores within `band` (relative) of
  that event's highest score: a recurring pattern that scores alike stops alerting, higher scores still alert,
  until `forget_s` of event time has passed since the verdict arrived (`band: null` silences every score up to
  it instead, which on NAB costs far more detections than it saves false alarms);
- a confirmed **miss** (a window closed without an alert, judged an anomaly) lowers the stream's threshold to
  that window's highest score (never below `min_threshold`), so the same pattern is caught next time.

The simulated reviewer (`LabelReviewer`) stands in for people: it answers from the labels, with a delay and an
error rate. `LogReviewer` replays the verdicts of a review log (people's, imported from Label Studio, or
simulated), for the events the log has.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.results.review_log import ALERT, MISSED  # a verdict's kinds are the review log's


@dataclass(frozen=True)
class Verdict:
    arrives: float  # event time (seconds) at which the stream's policy may use it
    kind: str  # ALERT: about an alert event; MISSED: about a window that closed without one
    first_row: int
    last_row: int  # an alert event's rows are only known to the policy; a window's are the window's
    anomaly: bool


class Reviewer(Protocol):
    def alert(self, first_row: int) -> Verdict | None:
        """The verdict on the alert event that starts at `first_row` (None: nobody reviews it)."""

    def closed(self, row: int, alerted_since: int) -> Verdict | None:
        """Called after every record: a verdict when a labelled window ends at `row` with no alert in it
        (`alerted_since`: the first row of the latest alert, -1 if none)."""


class FeedbackThreshold(BaseModel):
    """A fixed threshold that confirmed false alarms silence around their score, and confirmed misses lower,
    per stream. Defaults: the settings measured on NAB (docs/thresholds.md)."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(description="the starting threshold: an alert when the score reaches it")
    band: float | None = Field(0.015, gt=0.0, description="a false alarm silences scores within this relative distance "
                               "of its own (none: every score up to its own)")
    forget_s: float | None = Field(21 * 86_400.0, gt=0.0, description="event time after which a false alarm's silence ends (none: never)")
    lower_on_miss: bool = Field(False, description="lower the threshold to a confirmed missed window's highest score")
    min_threshold: float = Field(-math.inf, description="the threshold is never lowered below this")

    def apply(self, timestamps: np.ndarray, scores: np.ndarray, reviewer: Reviewer, block_rows: int, first_row: int = 0,
              events: dict[int, int] | None = None) -> np.ndarray:
        """Alerts (bool per record) over one stream, with `reviewer`'s verdicts used once they have arrived.
        Records before `first_row` (NAB's probation) never alert. `events`, when given, is filled with each alert
        event's first row -> last row."""
        t = np.maximum.accumulate(np.asarray(timestamps, np.float64))
        x = np.asarray(scores, np.float64)
        alerts = np.zeros(len(x), bool)
        pending: list[tuple[float, int, Verdict]] = []
        events = {} if events is None else events  # first row -> last row of each alert event so far
        threshold, silenced = self.threshold, []  # silenced: (until, a false alarm's score)
        event_start, last_alert = -1, -1
        for i in range(len(x)):
            while pending and pending[0][0] <= t[i]:
                v = heapq.heappop(pending)[2]
                if v.kind == ALERT and not v.anomaly:
                    level = float(x[v.first_row : events.get(v.first_row, v.last_row) + 1].max())
                    silenced.append((t[i] + self.forget_s if self.forget_s else math.inf, level))
                elif v.kind == MISSED and v.anomaly and self.lower_on_miss:
                    threshold = max(min(threshold, float(x[v.first_row : v.last_row + 1].max())), self.min_threshold)
            silenced = [f for f in silenced if f[0] > t[i]]
            if self.band is None:
                quiet = any(x[i] <= level for _, level in silenced)
            else:
                quiet = any(abs(x[i] - level) <= self.band * abs(level) for _, level in silenced)
            if i >= first_row and x[i] >= threshold and not quiet:
                alerts[i] = True
                if last_alert != i - 1 or i - event_start >= block_rows:
                    event_start = i
                    verdict = reviewer.alert(i)
                    if verdict is not None:
                        heapq.heappush(pending, (verdict.arrives, i, verdict))
                events[event_start] = i
                last_alert = i
            verdict = reviewer.closed(i, last_alert)
            if verdict is not None:
                heapq.heappush(pending, (verdict.arrives, i, verdict))
        return alerts


class NoReviewer:
    """Nobody reviews: the policy runs as its fixed threshold (the baseline, and the review log's alerts)."""

    def alert(self, first_row: int) -> None:
        return None

    def closed(self, row: int, alerted_since: int) -> None:
        return None


NOBODY = NoReviewer()


class LabelReviewer:
    """A stand-in for people: judges from the labels (an alert event starting inside a window is an anomaly),
    wrong with probability `error_rate`, its verdict arriving `delay_s` of event time after the event starts
    (or after a missed window ends)."""

    def __init__(self, timestamps: np.ndarray, windows: np.ndarray, delay_s: float, error_rate: float = 0.0,
                 rng: np.random.Generator | None = None):
        self.t = np.maximum.accumulate(np.asarray(timestamps, np.float64))
        self.windows = np.asarray(windows, np.int64).reshape(-1, 2)
        self.delay_s = delay_s
        self.error_rate = error_rate
        self.rng = rng or np.random.default_rng(0)
        self._ends = {int(e): (int(s), int(e)) for s, e in self.windows}

    def _truth(self, anomaly: bool) -> bool:
        return (not anomaly) if self.error_rate and self.rng.random() < self.error_rate else anomaly

    def inside(self, row: int) -> bool:
        return bool(np.any((self.windows[:, 0] <= row) & (row <= self.windows[:, 1])))

    def alert(self, first_row: int) -> Verdict:
        return Verdict(self.t[first_row] + self.delay_s, ALERT, first_row, first_row, self._truth(self.inside(first_row)))

    def closed(self, row: int, alerted_since: int) -> Verdict | None:
        window = self._ends.get(row)
        if window is None or alerted_since >= window[0]:
            return None
        return Verdict(self.t[row] + self.delay_s, MISSED, window[0], window[1], self._truth(True))


class LogReviewer:
    """Replays recorded verdicts: those about alert events, by their first row, and those about missed windows,
    by the window's last row. An event the log does not have (the feedback policy alerted where the logged
    policy did not) gets no verdict."""

    def __init__(self, verdicts: list[Verdict]):
        self._alerts = {v.first_row: v for v in verdicts if v.kind == ALERT}
        self._missed = {v.last_row: v for v in verdicts if v.kind == MISSED}

    def alert(self, first_row: int) -> Verdict | None:
        return self._alerts.get(first_row)

    def closed(self, row: int, alerted_since: int) -> Verdict | None:
        v = self._missed.get(row)
        return v if v is not None and alerted_since < v.first_row else None
