"""When a load run's figures may be reported, after MLPerf LoadGen's VALID/INVALID: a result from a run that was
too short, too small, full of errors, or that did not deliver the load it claims, is not a measurement of the
service at that load, whatever its latencies look like.

Rules (each broken one gives one reason naming it and the figures):
- `min_duration_s`: the measured duration is at least this long (a short run misses periodic stalls: GC,
  checkpoints, autoscaling);
- `min_requests`: at least this many successful requests (below 100 a p99 is just the maximum);
- `max_error_rate`: (errors + shed + dropped) / every request due in the window stays at or under it (a shed or
  dropped request is load the service was offered and did not serve);
- `rate_tolerance` (open loop only): the achieved rate is within this fraction of the offered one.

The offered rate compared against is, unless given, the rate the schedule actually offered in the measured
window (`scheduled_rps`): Poisson arrivals put a random number of requests in a window (about ±1/sqrt(N)), and
that randomness is the generator's, not a failure of the service.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from harness.load.summary import LoadSummary


class ValidityRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_duration_s: float = Field(10.0, ge=0)
    min_requests: int = Field(100, ge=0)
    max_error_rate: float = Field(0.01, ge=0, le=1)
    rate_tolerance: float = Field(0.05, ge=0)


def judge(outcome: LoadSummary, rules: ValidityRules | None = None,
          offered_rps: float | None = None) -> tuple[bool, list[str]]:
    """(valid, reasons) of a run's summary; reasons is empty exactly when valid."""
    rules = rules or ValidityRules()
    s = outcome
    reasons = []
    if s.duration_s < rules.min_duration_s:
        reasons.append(f"min_duration_s: measured {s.duration_s:.2f} s < {rules.min_duration_s:g} s")
    if s.requests < rules.min_requests:
        reasons.append(f"min_requests: {s.requests} scored requests < {rules.min_requests}")
    if s.error_rate > rules.max_error_rate:
        reasons.append(f"max_error_rate: {s.errors} errors + {s.shed} shed + {s.dropped} dropped of {s.attempts} requests = "
                       f"{s.error_rate:.2%} > {rules.max_error_rate:.2%}")
    if s.mode == "open":
        offered = offered_rps if offered_rps is not None else (s.scheduled_rps or s.offered_rps)
        if offered:
            off = abs(s.achieved_rps - offered) / offered
            if off > rules.rate_tolerance:
                reasons.append(f"rate_tolerance: achieved {s.achieved_rps:.1f} req/s vs offered {offered:.1f} req/s is "
                               f"{off:.1%} off > {rules.rate_tolerance:.1%}")
    return not reasons, reasons
