"""The result of one load run, as it is printed (`--json`) and stored: settings, measured figures, validity.

Counting: `requests` are the measured requests that succeeded, `errors` those that were sent and failed (by kind
in `error_kinds`), `dropped` those due in the window but never sent; together they are every request the schedule
offered in the measured window. Rates are successes per measured second.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LatencyMs(BaseModel):
    """Latency percentiles of the successful requests, in milliseconds (None when there were none)."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None


class SecondStats(BaseModel):
    """One whole second since the measured window's start, by completion time."""

    t: int
    rps: int = Field(description="successful requests completed in this second")
    eps: int = Field(description="events those requests carried")
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    dropped: int = 0


class LoadSummary(BaseModel):
    mode: Literal["open", "closed"]
    arrivals: Literal["constant", "poisson"] | None = Field(None, description="open loop only")
    offered_rps: float | None = Field(None, description="the nominal rate asked for (open loop only)")
    scheduled_rps: float | None = Field(
        None, description="requests the schedule actually offered in the measured window per second (open loop)")
    concurrency: int | None = Field(None, description="virtual clients (closed loop only)")
    events_per_request: float
    warmup_s: float = 0.0
    duration_s: float = Field(description="measured: window start to the later of window end and last success")
    requests: int
    events: int
    achieved_rps: float
    achieved_eps: float
    latency_ms: LatencyMs
    errors: int
    error_kinds: dict[str, int] = Field(default_factory=dict)
    dropped: int
    max_send_lag_ms: float | None = Field(
        None, description="how far behind its schedule the generator sent a request, at worst (open loop)")
    valid: bool | None = Field(None, description="None until judged by harness.load.validity")
    reasons: list[str] = Field(default_factory=list)
    per_second: list[SecondStats] = Field(default_factory=list)

    @property
    def attempts(self) -> int:
        """Every request due in the measured window: succeeded, failed or dropped."""
        return self.requests + self.errors + self.dropped

    @property
    def error_rate(self) -> float:
        """(errors + dropped) / attempts; 0 when nothing was due."""
        return (self.errors + self.dropped) / self.attempts if self.attempts else 0.0

    def to_json(self, per_second: bool = True, indent: int | None = None) -> str:
        return self.model_dump_json(exclude=None if per_second else {"per_second"}, indent=indent)
