"""Where a load run's measurements go: every latency in an HdrHistogram (fixed memory, any rate, exact merging)
and a per-second series, so a stall shows up both in the tail percentiles and as the second it happened in.

Latencies are kept in whole microseconds from 1 us to 120 s (3 significant digits: at most 0.1% off); a longer
one is clamped to 120 s. Two histograms: `latency`, of the scored requests (the SLO's figure), and
`answered_latency`, of every request the service answered, whatever the status (scored, shed, refused): a service
that sheds load must still answer fast, and a p99 of scored requests alone would not show it. Shed requests (503
with Retry-After) are counted apart from errors; failures are counted by kind. Times (`at_s`) are seconds since
the measured window's start, the start of second 0 of the series.

Several generators (separate processes or Ray actors) each keep a Recorder; `to_state()` is a plain dict of
numbers and strings that any transport can carry, and `merge` adds one into another exactly, so the merged
percentiles are those of all the samples together, never averages of percentiles.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.load.errors import SHED
from harness.load.summary import LatencyMs

LOWEST_US = 1
HIGHEST_US = 120_000_000
DIGITS = 3  # the run's histogram
SECOND_DIGITS = 2  # each second's own histogram: 1% is plenty for a time series and 7x smaller


def _histogram(digits: int = DIGITS) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


def _us(latency_s: float) -> int:
    return min(max(round(latency_s * 1e6), LOWEST_US), HIGHEST_US)


def _encode(h: HdrHistogram) -> str:
    return h.encode().decode("ascii")


def _decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


@dataclass
class Second:
    """What completed during one whole second of the run."""

    requests: int = 0
    events: int = 0
    errors: int = 0
    dropped: int = 0
    latency: HdrHistogram = field(default_factory=lambda: _histogram(SECOND_DIGITS))
    shed: int = 0

    def add(self, other: "Second") -> None:
        self.requests += other.requests
        self.events += other.events
        self.errors += other.errors
        self.dropped += other.dropped
        self.shed += other.shed
        self.latency.add(other.latency)

    def state(self, t: int) -> dict[str, Any]:
        return {"t": t, "requests": self.requests, "events": self.events, "errors": self.errors,
                "dropped": self.dropped, "shed": self.shed, "latency": _encode(self.latency)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Second":
        return cls(requests=state["requests"], events=state["events"], errors=state["errors"],
                   dropped=state["dropped"], latency=_decode(state["latency"]), shed=state["shed"])


class Recorder:
    """Latencies, counts and the per-second series of one run (or of several merged).

    `window_s` is the length of the measured window (set by whoever runs the load); `last_s` the latest successful
    completion. The run's measured duration is the later of the two: a service that falls behind finishes its
    last requests after the window, which lowers the achieved rate, as it should.
    """

    def __init__(self, window_s: float = 0.0):
        self.latency = _histogram()  # scored requests
        self.answered_latency = _histogram()  # every answered request: scored, shed, refused
        self.seconds: dict[int, Second] = {}
        self.requests = 0  # successful
        self.events = 0  # carried by successful requests
        self.errors = 0
        self.error_kinds: Counter[str] = Counter()
        self.dropped = 0
        self.shed = 0
        self.window_s = window_s
        self.last_s = 0.0

    def _second(self, at_s: float) -> Second:
        t = max(math.floor(at_s), 0)
        second = self.seconds.get(t)
        if second is None:
            second = self.seconds[t] = Second()
        return second

    def record(self, latency_s: float | None, at_s: float, events: int = 1, ok: bool = True,
               kind: str | None = None) -> None:
        """One request that completed at `at_s`: a success taking `latency_s`, or (ok=False) a failure of `kind`
        ("shed" counts as shed, not as an error). A failure's `latency_s` is how long its answer took, or None
        when none came (a timeout, a lost connection); every answer's latency goes into `answered_latency`."""
        second = self._second(at_s)
        us = None if latency_s is None else _us(latency_s)
        if us is not None:
            self.answered_latency.record_value(us)
        if ok:
            if us is None:
                raise ValueError("a successful request needs its latency")
            self.latency.record_value(us)
            second.latency.record_value(us)
            self.requests += 1
            self.events += events
            second.requests += 1
            second.events += events
            self.last_s = max(self.last_s, at_s)
        elif kind == SHED:
            self.shed += 1
            second.shed += 1
        else:
            self.errors += 1
            self.error_kinds[kind or "error"] += 1
            second.errors += 1

    def drop(self, at_s: float) -> None:
        """A request that was due at `at_s` but never sent."""
        self.dropped += 1
        self._second(at_s).dropped += 1

    @property
    def duration_s(self) -> float:
        return max(self.window_s, self.last_s)

    def merge(self, other: "Recorder") -> "Recorder":
        """Add `other`'s measurements into this one (runs that shared a window start: same second numbers)."""
        self.latency.add(other.latency)
        self.answered_latency.add(other.answered_latency)
        for t, second in other.seconds.items():
            mine = self.seconds.get(t)
            if mine is None:
                mine = self.seconds[t] = Second()
            mine.add(second)
        self.requests += other.requests
        self.events += other.events
        self.errors += other.errors
        self.error_kinds.update(other.error_kinds)
        self.dropped += other.dropped
        self.shed += other.shed
        self.window_s = max(self.window_s, other.window_s)
        self.last_s = max(self.last_s, other.last_s)
        return self

    def second_state(self, t: int) -> dict[str, Any] | None:
        """Second `t` as `to_state` lists it, or None if nothing completed in it: read, while the run goes on, by
        another thread (live metrics) once the second is over."""
        s = self.seconds.get(t)
        return None if s is None else s.state(t)

    # --- shipping between processes ------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A plain, JSON- and pickle-safe dict (histograms as HdrHistogram's base64 text encoding)."""
        return {
            "latency": _encode(self.latency),
            "answered_latency": _encode(self.answered_latency),
            "seconds": [s.state(t) for t, s in sorted(self.seconds.items())],
            "requests": self.requests,
            "events": self.events,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "dropped": self.dropped,
            "shed": self.shed,
            "window_s": self.window_s,
            "last_s": self.last_s,
        }

    def __reduce__(self):
        # HdrHistogram's ctypes counts do not pickle; its encoding does (so Ray can return a Recorder as is)
        return Recorder.from_state, (self.to_state(),)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Recorder":
        r = cls(state["window_s"])
        r.latency = _decode(state["latency"])
        r.answered_latency = _decode(state["answered_latency"])
        for s in state["seconds"]:
            r.seconds[int(s["t"])] = Second.from_state(s)
        r.requests, r.events = state["requests"], state["events"]
        r.errors, r.dropped, r.shed = state["errors"], state["dropped"], state["shed"]
        r.error_kinds = Counter(state["error_kinds"])
        r.last_s = state["last_s"]
        return r

    # --- figures ---------------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The measured figures of a `LoadSummary` (see harness.load.summary), without the run's settings."""
        from harness.load.summary import SecondStats

        duration = self.duration_s
        per_second = []
        for t in range(max(self.seconds, default=-1) + 1):  # empty seconds included: a stall is a gap, shown
            s = self.seconds.get(t) or Second()
            p50, p95, p99 = (_ms(s.latency, p) if s.requests else None for p in (50, 95, 99))
            per_second.append(SecondStats(t=t, rps=s.requests, eps=s.events, p50_ms=p50, p95_ms=p95, p99_ms=p99,
                                          errors=s.errors, dropped=s.dropped, shed=s.shed))
        answered = self.answered_latency.get_total_count()
        return {
            "duration_s": duration,
            "requests": self.requests,
            "events": self.events,
            "achieved_rps": self.requests / duration if duration > 0 else 0.0,
            "achieved_eps": self.events / duration if duration > 0 else 0.0,
            "answered": answered,
            "answered_rps": answered / duration if duration > 0 else 0.0,
            "latency_ms": _percentiles(self.latency),
            "answered_latency_ms": _percentiles(self.answered_latency),
            "errors": self.errors,
            "error_kinds": dict(sorted(self.error_kinds.items())),
            "dropped": self.dropped,
            "shed": self.shed,
            "per_second": per_second,
        }


def merged_second(states: list[dict[str, Any]], quantiles: tuple[float, ...]) -> tuple[int, int, int, dict[float, float | None], int]:
    """Several generators' states of one second, merged: requests scored, events, errors, latency ms at each
    quantile, requests shed."""
    total = Second()
    for state in states:
        total.add(Second.from_state(state))
    latency = {q: (_ms(total.latency, 100 * q) if total.requests else None) for q in quantiles}
    return total.requests, total.events, total.errors, latency, total.shed


def _percentiles(h: HdrHistogram) -> LatencyMs:
    if not h.get_total_count():
        return LatencyMs()
    return LatencyMs(p50=_ms(h, 50), p90=_ms(h, 90), p95=_ms(h, 95), p99=_ms(h, 99), max=h.get_max_value() / 1e3,
                     mean=h.get_mean_value() / 1e3)


def _ms(h: HdrHistogram, percentile: float) -> float:
    return h.get_value_at_percentile(percentile) / 1e3
