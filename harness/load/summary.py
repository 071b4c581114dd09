"""The result of one load run, as it is printed (`--json`) and stored: settings, measured figures, validity.

Counting: `requests` are the measured requests that were scored (a 200 carrying one finite score per event),
`shed` those the service shed (503 with Retry-After: overload, by design), `errors` those that were sent and
failed otherwise (by kind in `error_kinds`: a status, "bad_response", "timeout", ...), `dropped` those due in the
window but never sent; together they are every request the schedule offered in the measured window.

Rates are per measured second: `achieved_rps` and `achieved_eps` (the goodput) count scored requests and their
events; `answered_rps` (the throughput) every request the service answered, whatever the status. A run that
sheds did not carry the load offered: `error_rate` (what validity and the peak search judge) counts shed
requests with the errors and the dropped, as not served.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LatencyMs(BaseModel):
    """Latency percentiles in milliseconds (None when there was no request to measure)."""

    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None


class SecondStats(BaseModel):
    """One whole second since the measured window's start, by completion time."""

    t: int
    rps: int = Field(description="scored requests completed in this second")
    eps: int = Field(description="events those requests carried")
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    dropped: int = 0
    shed: int = Field(0, description="requests shed (503 with Retry-After) in this second")


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
    requests: int = Field(description="requests scored: answered 200 with one finite score per event")
    events: int = Field(description="events those requests carried")
    achieved_rps: float = Field(description="requests scored per second")
    achieved_eps: float = Field(description="goodput: events scored per second")
    answered: int | None = Field(None, description="requests answered, whatever the status: scored, shed or refused "
                                 "(None: a run recorded before this was counted)")
    answered_rps: float | None = Field(None, description="throughput: requests answered per second")
    latency_ms: LatencyMs = Field(description="latency of the scored requests")
    answered_latency_ms: LatencyMs = Field(default_factory=LatencyMs, description=(
        "latency of every answered request, shed and refused ones included: how fast the service answers under "
        "overload"))
    errors: int = Field(description="requests sent that failed: a status other than 200 (a 503 without "
                        "Retry-After included), a bad 200 (bad_response), a timeout, a lost connection")
    error_kinds: dict[str, int] = Field(default_factory=dict)
    dropped: int = Field(description="requests due that the generator did not send (docs/load.md)")
    shed: int = Field(0, description="requests the service shed: answered 503 with Retry-After")
    max_send_lag_ms: float | None = Field(
        None, description="how far behind its schedule the generator sent a request, at worst (open loop)")
    valid: bool | None = Field(None, description="None until judged by harness.load.validity")
    reasons: list[str] = Field(default_factory=list)
    per_second: list[SecondStats] = Field(default_factory=list)

    @property
    def attempts(self) -> int:
        """Every request due in the measured window: scored, shed, failed or dropped."""
        return self.requests + self.shed + self.errors + self.dropped

    @property
    def error_rate(self) -> float:
        """The share not served: (errors + shed + dropped) / attempts; 0 when nothing was due."""
        return (self.errors + self.shed + self.dropped) / self.attempts if self.attempts else 0.0

    def to_json(self, per_second: bool = True, indent: int | None = None) -> str:
        return self.model_dump_json(exclude=None if per_second else {"per_second"}, indent=indent)
