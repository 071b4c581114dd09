"""What a run hands back: its Recorder plus the settings needed to read it (mode, offered rate, clients), in a
form that merges across generators and crosses process boundaries (`to_state` / `from_state`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Sequence

from harness.load.recorder import Recorder
from harness.load.summary import LoadSummary
from harness.load.validity import ValidityRules, judge

Send = Callable[[int], Awaitable[object]]
"""`await send(i)` sends request i (bodies are usually picked as i modulo their number), raising on failure."""


@dataclass
class LoadOutcome:
    mode: Literal["open", "closed"]
    recorder: Recorder = field(default_factory=Recorder)
    arrivals: Literal["constant", "poisson"] | None = None
    offered_rps: float | None = None
    scheduled: int = 0  # requests due in the measured window (open loop), sent or not
    concurrency: int | None = None
    events_per_request: float = 1.0
    warmup_s: float = 0.0
    max_send_lag_s: float | None = None

    def merge(self, other: "LoadOutcome") -> "LoadOutcome":
        """Add another generator's run of the same kind over the same window (rates and clients add up)."""
        if other.mode != self.mode:
            raise ValueError(f"cannot merge a {other.mode}-loop outcome into a {self.mode}-loop one")
        total = self.recorder.requests + other.recorder.requests
        if total:
            self.events_per_request = (self.events_per_request * self.recorder.requests
                                       + other.events_per_request * other.recorder.requests) / total
        self.recorder.merge(other.recorder)
        self.offered_rps = _add(self.offered_rps, other.offered_rps)
        self.concurrency = _add(self.concurrency, other.concurrency)
        self.scheduled += other.scheduled
        if other.max_send_lag_s is not None:
            self.max_send_lag_s = max(self.max_send_lag_s or 0.0, other.max_send_lag_s)
        return self

    def summary(self, rules: ValidityRules | None = None) -> LoadSummary:
        """The run's figures, judged by `rules` (the defaults when None)."""
        window = self.recorder.window_s
        s = LoadSummary(
            mode=self.mode,
            arrivals=self.arrivals,
            offered_rps=self.offered_rps,
            scheduled_rps=self.scheduled / window if self.mode == "open" and window > 0 else None,
            concurrency=self.concurrency,
            events_per_request=self.events_per_request,
            warmup_s=self.warmup_s,
            max_send_lag_ms=None if self.max_send_lag_s is None else self.max_send_lag_s * 1e3,
            **self.recorder.summary(),
        )
        s.valid, s.reasons = judge(s, rules)
        return s

    def to_state(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "recorder": self.recorder.to_state(), "arrivals": self.arrivals,
            "offered_rps": self.offered_rps, "scheduled": self.scheduled, "concurrency": self.concurrency,
            "events_per_request": self.events_per_request, "warmup_s": self.warmup_s,
            "max_send_lag_s": self.max_send_lag_s,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "LoadOutcome":
        return cls(**{**state, "recorder": Recorder.from_state(state["recorder"])})


class EventsPerRequest:
    """Events carried by request i: one count for all, or a per-body list cycled like the bodies themselves."""

    def __init__(self, events_per_request: int | Sequence[int]):
        counts = [events_per_request] if isinstance(events_per_request, int) else [int(n) for n in events_per_request]
        if not counts or min(counts) < 1:
            raise ValueError(f"events_per_request must be >= 1 (or a list of such), got {events_per_request!r}")
        self.counts = counts
        self.mean = sum(counts) / len(counts)

    def __call__(self, i: int) -> int:
        return self.counts[i % len(self.counts)]


def _add(a, b):
    return b if a is None else a if b is None else a + b
