"""The highest rate a service sustains within its latency SLO, after MLPerf LoadGen's FindPeakPerformance:
double the offered rate until a run fails, then bisect between the last passing and the first failing rate
until they are within `precision` of each other (or `max_runs` runs were spent). A run passes when it is VALID
(when it was judged), its p95 is within the SLO and its error rate (errors + shed + dropped: not served) is
within the limit.

If even the first rate fails, the rate is halved until one passes (or `min_rps` is reached). Each probe is a
whole load run, so `max_runs` bounds the search's time: about max_runs x (warm-up + duration).

`measure(rate) -> LoadSummary` runs one load at `rate`; it may be a plain function (`find_peak`) or a coroutine
function (`find_peak_async`, for callers already inside an event loop, such as an async Ray actor).
"""

from __future__ import annotations

from typing import Awaitable, Callable, Generator

from pydantic import BaseModel

from harness.load.summary import LoadSummary


class Probe(BaseModel):
    rps: float
    passed: bool
    p95_ms: float | None
    error_rate: float
    valid: bool | None
    why: str = ""


class PeakResult(BaseModel):
    peak_rps: float | None  # best passing rate, None when none passed
    summary: LoadSummary | None  # its run
    probes: list[Probe]
    converged: bool  # the bracket reached `precision` (False: out of runs, or no failing rate below max_rps)


def find_peak(measure: Callable[[float], LoadSummary], *, start_rps: float, slo_p95_ms: float,
              max_error_rate: float = 0.01, precision: float = 0.05, max_runs: int = 12,
              max_rps: float | None = None, min_rps: float | None = None) -> PeakResult:
    """Search with a plain `measure` (see the module docstring)."""
    search = _search(start_rps, slo_p95_ms, max_error_rate, precision, max_runs, max_rps, min_rps)
    rate = next(search)
    try:
        while True:
            rate = search.send(measure(rate))
    except StopIteration as stop:
        return stop.value


async def find_peak_async(measure: Callable[[float], Awaitable[LoadSummary]], *, start_rps: float,
                          slo_p95_ms: float, max_error_rate: float = 0.01, precision: float = 0.05,
                          max_runs: int = 12, max_rps: float | None = None, min_rps: float | None = None) -> PeakResult:
    """The same search with a coroutine `measure`."""
    search = _search(start_rps, slo_p95_ms, max_error_rate, precision, max_runs, max_rps, min_rps)
    rate = next(search)
    try:
        while True:
            rate = search.send(await measure(rate))
    except StopIteration as stop:
        return stop.value


def passes(summary: LoadSummary, slo_p95_ms: float, max_error_rate: float) -> tuple[bool, str]:
    """(passed, why not) of one run."""
    if summary.valid is False:
        return False, "not valid: " + "; ".join(summary.reasons)
    p95 = summary.latency_ms.p95
    if p95 is None:
        return False, "no scored requests"
    if p95 > slo_p95_ms:
        return False, f"p95 {p95:.1f} ms > SLO {slo_p95_ms:g} ms"
    if summary.error_rate > max_error_rate:
        return False, f"not served (errors + shed + dropped) {summary.error_rate:.2%} > {max_error_rate:.2%}"
    return True, ""


def _search(start_rps, slo_p95_ms, max_error_rate, precision, max_runs, max_rps,
            min_rps) -> Generator[float, LoadSummary, PeakResult]:
    """Yields the rates to run, receives their summaries, returns the result."""
    if start_rps <= 0 or precision <= 0 or max_runs < 1:
        raise ValueError("need start_rps > 0, precision > 0 and max_runs >= 1")
    floor = min_rps if min_rps is not None else start_rps / 64
    probes: list[Probe] = []
    best: tuple[float, LoadSummary] | None = None
    low, high = None, None  # last passing, first failing

    def probe(rate: float):
        nonlocal best, low, high
        summary = yield rate
        ok, why = passes(summary, slo_p95_ms, max_error_rate)
        probes.append(Probe(rps=rate, passed=ok, p95_ms=summary.latency_ms.p95, error_rate=summary.error_rate,
                            valid=summary.valid, why=why))
        if ok:
            low = rate if low is None else max(low, rate)
            if best is None or rate > best[0]:
                best = (rate, summary)
        else:
            high = rate if high is None else min(high, rate)

    rate = start_rps if max_rps is None else min(start_rps, max_rps)
    # grow (or, if the start fails, shrink) until the peak is bracketed
    while len(probes) < max_runs:
        yield from probe(rate)
        if low is not None and high is not None:
            break
        if high is None:  # everything so far passed
            if max_rps is not None and rate >= max_rps:
                break
            rate = rate * 2 if max_rps is None else min(rate * 2, max_rps)
        else:  # nothing passed yet
            if rate / 2 < floor:
                break
            rate /= 2
    # bisect
    while low is not None and high is not None and (high - low) / low > precision and len(probes) < max_runs:
        yield from probe((low + high) / 2)
    converged = low is not None and high is not None and (high - low) / low <= precision
    return PeakResult(peak_rps=best[0] if best else None, summary=best[1] if best else None, probes=probes,
                      converged=converged)
