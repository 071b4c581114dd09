"""Open-loop load: requests leave at times fixed in advance (harness.load.schedule), whether or not earlier ones
have been answered, the way independent users keep arriving at a service that has stalled.

Latency is measured from each request's *intended* send time, not from when it actually left: if the service (or
anything else) delays the sending, that delay is part of what a user would have waited. This is what keeps the
figures free of coordinated omission.

Two bounds keep the generator honest and the run finite; a request that meets either is *dropped*: counted, not
sent, and counted against the run's validity like an error:
- `max_in_flight`: that many requests are already outstanding (the generator's sockets and memory are finite;
  queueing more inside the client would hide the load instead of offering it);
- `max_lateness_s` (default 100 ms): the generator itself is that far behind its schedule (its event loop was
  blocked or starved of CPU). Sending the backlog in a burst would offer load the schedule never had and charge
  the generator's own stall to the service; lateness under the bound is ordinary timer jitter and is sent (its
  latency still counts from the intended time). `max_send_lag_ms` in the summary reports the worst lateness sent.

The run issues requests due in [0, warmup_s + duration_s); those due in the warm-up are sent but not recorded.
It then waits at most `drain_s` for outstanding requests; any still outstanding are cancelled and counted as
errors of kind "timeout".
"""

from __future__ import annotations

import asyncio
from typing import Callable, Sequence

from harness.load.errors import answered, error_kind
from harness.load.outcome import EventsPerRequest, LoadOutcome, Send
from harness.load.recorder import Recorder
from harness.load.schedule import Arrivals, offsets

_YIELD_EVERY = 64  # when behind schedule, let completions run at least this often


async def run_open_loop(
    send: Send,
    *,
    rate: float,
    duration_s: float,
    warmup_s: float = 0.0,
    arrivals: Arrivals = "constant",
    seed: int = 0,
    max_in_flight: int = 1024,
    events_per_request: int | Sequence[int] = 1,
    max_lateness_s: float = 0.1,
    drain_s: float = 10.0,
    recorder: Recorder | None = None,
) -> LoadOutcome:
    """Offer `rate` requests per second for `warmup_s + duration_s`; `send(i)` sends request i, raising on failure."""
    if duration_s <= 0 or warmup_s < 0 or max_in_flight < 1:
        raise ValueError("need duration_s > 0, warmup_s >= 0 and max_in_flight >= 1")
    loop = asyncio.get_running_loop()
    events = EventsPerRequest(events_per_request)
    rec = recorder if recorder is not None else Recorder()  # given: someone reads it live (metrics)
    rec.window_s = duration_s
    outcome = LoadOutcome("open", rec, arrivals=arrivals, offered_rps=rate, events_per_request=events.mean,
                          warmup_s=warmup_s, max_send_lag_s=0.0)
    end = warmup_s + duration_s
    t0 = loop.time()
    window = t0 + warmup_s
    pending: dict[asyncio.Task, bool] = {}  # outstanding request -> whether it is measured

    async def issue(i: int, intended: float, measured: bool) -> None:
        try:
            await send(i)
        except Exception as exc:  # noqa: BLE001 - any failure of `send` is a failed (or shed) request
            if measured:
                done = loop.time()
                rec.record(done - intended if answered(exc) else None, done - window, ok=False, kind=error_kind(exc))
        else:
            if measured:
                done = loop.time()
                rec.record(done - intended, done - window, events(i))

    for i, offset in enumerate(offsets(arrivals, rate, seed)):
        if offset >= end:
            break
        intended = t0 + offset
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        measured = offset >= warmup_s
        lag = loop.time() - intended
        if measured:
            outcome.scheduled += 1
        if lag > max_lateness_s or len(pending) >= max_in_flight:
            if measured:
                rec.drop(intended - window)
            continue
        if measured:
            outcome.max_send_lag_s = max(outcome.max_send_lag_s, lag)
        task = loop.create_task(issue(i, intended, measured))
        pending[task] = measured
        task.add_done_callback(pending.pop)

    if pending:
        await asyncio.wait(list(pending), timeout=drain_s)
    await _time_out(pending, lambda: rec.record(None, loop.time() - window, ok=False, kind="timeout"))
    return outcome


async def _time_out(pending: dict[asyncio.Task, bool], count_timeout: Callable[[], None]) -> None:
    """Cancel what is still outstanding after the drain, counting each measured one as a timeout."""
    late = list(pending.items())
    for task, measured in late:
        task.cancel()
        if measured:
            count_timeout()
    if late:
        await asyncio.gather(*(task for task, _ in late), return_exceptions=True)
