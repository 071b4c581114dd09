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
from harness.load.settings import RunShape

_YIELD_EVERY = 64  # when behind schedule, let completions run at least this often


async def run_open_loop(
    send: Send,
    *,
    rate: float,
    duration_s: float,
    warmup_s: float = 0.0,
    arrivals: Arrivals = "constant",
    seed: int = 0,
    max_in_flight: int = RunShape.model_fields["max_in_flight"].default,
    events_per_request: int | Sequence[int] = 1,
    max_lateness_s: float = 0.1,
    drain_s: float = 10.0,
    recorder: Recorder | None = None,
) -> LoadOutcome:
    """Offer `rate` requests per second for `warmup_s + duration_s`; `send(i)` sends request i, raising on failure."""
    if duration_s <= 0 or warmup_s < 0 or max_in_flight < 1:
        raise ValueError("need duration_s > 0, warmup_s >= 0 and max_in_flight >= 1")
    rec = recorder if recorder is not None else Recorder()  # given: someone reads it live (metrics)
    rec.window_s = duration_s
    events = EventsPerRequest(events_per_request)
    outcome = LoadOutcome("open", rec, arrivals=arrivals, offered_rps=rate, events_per_request=events.mean,
                          warmup_s=warmup_s, max_send_lag_s=0.0)
    run = _Run(send, rec, events, warmup_s)
    for i, offset in enumerate(offsets(arrivals, rate, seed)):
        if offset >= warmup_s + duration_s:
            break
        intended = run.t0 + offset
        delay = intended - run.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        measured = offset >= warmup_s
        lag = run.loop.time() - intended
        if measured:
            outcome.scheduled += 1
        if lag > max_lateness_s or len(run.pending) >= max_in_flight:
            if measured:
                rec.drop(intended - run.window)
            continue
        if measured:
            outcome.max_send_lag_s = max(outcome.max_send_lag_s, lag)
        run.issue(i, intended, measured)
    if run.pending:
        await asyncio.wait(list(run.pending), timeout=drain_s)
    await _time_out(run.pending, lambda: rec.record(None, run.loop.time() - run.window, ok=False, kind="timeout"))
    return outcome


class _Run:
    """The requests of one open-loop run in flight, each recorded from its intended send time when it ends."""

    def __init__(self, send: Send, rec: Recorder, events: EventsPerRequest, warmup_s: float):
        self.send, self.rec, self.events = send, rec, events
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.window = self.t0 + warmup_s
        self.pending: dict[asyncio.Task, bool] = {}  # outstanding request -> whether it is measured

    def issue(self, i: int, intended: float, measured: bool) -> None:
        task = self.loop.create_task(self._send(i, intended, measured))
        self.pending[task] = measured
        task.add_done_callback(self.pending.pop)

    async def _send(self, i: int, intended: float, measured: bool) -> None:
        try:
            await self.send(i)
        except Exception as exc:  # noqa: BLE001 - any failure of `send` is a failed (or shed) request
            if measured:
                done = self.loop.time()
                self.rec.record(done - intended if answered(exc) else None, done - self.window, ok=False,
                                kind=error_kind(exc))
        else:
            if measured:
                done = self.loop.time()
                self.rec.record(done - intended, done - self.window, self.events(i))


async def _time_out(pending: dict[asyncio.Task, bool], count_timeout: Callable[[], None]) -> None:
    """Cancel what is still outstanding after the drain, counting each measured one as a timeout."""
    late = list(pending.items())
    for task, measured in late:
        task.cancel()
        if measured:
            count_timeout()
    if late:
        await asyncio.gather(*(task for task, _ in late), return_exceptions=True)
