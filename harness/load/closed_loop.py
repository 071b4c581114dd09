"""Closed-loop load: N virtual clients, each sending one request, awaiting its answer, thinking, and repeating.

It measures what a fixed population of patient clients sees, latency from each request's actual send. It is
*not* a measure of the service under a given load: when the service stalls, every client waits on its one
outstanding request and sends nothing else, so a one-second stall costs one slow sample per client instead of
the hundreds of requests an open world would have sent meanwhile (coordinated omission). The percentiles then
describe the service at the pace it allowed itself; use the open loop (harness.load.open_loop) for rates and SLOs.

The clients start requests for `warmup_s + duration_s`; requests started in the warm-up are not recorded. After
that the run waits at most `drain_s` for requests in flight, which are then cancelled and counted as "timeout".
"""

from __future__ import annotations

import asyncio
from itertools import count
from typing import Sequence

from harness.load.errors import answered, error_kind
from harness.load.outcome import EventsPerRequest, LoadOutcome, Send
from harness.load.recorder import Recorder


async def run_closed_loop(
    send: Send,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.0,
    think_time_s: float = 0.0,
    events_per_request: int | Sequence[int] = 1,
    drain_s: float = 10.0,
    recorder: Recorder | None = None,
) -> LoadOutcome:
    """Run `concurrency` clients sharing one request counter (so request i is sent once, by whichever is free)."""
    if concurrency < 1 or duration_s <= 0 or warmup_s < 0 or think_time_s < 0:
        raise ValueError("need concurrency >= 1, duration_s > 0, warmup_s >= 0 and think_time_s >= 0")
    loop = asyncio.get_running_loop()
    events = EventsPerRequest(events_per_request)
    rec = recorder if recorder is not None else Recorder()  # given: someone reads it live (metrics)
    rec.window_s = duration_s
    outcome = LoadOutcome("closed", rec, concurrency=concurrency, events_per_request=events.mean, warmup_s=warmup_s)
    t0 = loop.time()
    window = t0 + warmup_s
    stop = window + duration_s
    numbers = count()
    in_flight: dict[int, float] = {}  # client -> send time of its outstanding request

    async def client(c: int) -> None:
        while loop.time() < stop:
            i = next(numbers)
            sent = in_flight[c] = loop.time()
            ok, kind, got_answer = True, None, True
            try:
                await send(i)
            except Exception as exc:  # noqa: BLE001 - any failure of `send` is a failed (or shed) request
                ok, kind, got_answer = False, error_kind(exc), answered(exc)
            done = loop.time()
            del in_flight[c]
            if sent >= window:
                rec.record(done - sent if got_answer else None, done - window, events(i), ok, kind)
            if think_time_s:
                await asyncio.sleep(think_time_s)

    clients = [loop.create_task(client(c)) for c in range(concurrency)]
    await asyncio.wait(clients, timeout=max(stop + drain_s - loop.time(), 0.0))
    for sent in list(in_flight.values()):
        if sent >= window:
            rec.record(None, loop.time() - window, ok=False, kind="timeout")
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    return outcome
