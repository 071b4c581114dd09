"""Running load: `run_load` with any async `send`, `drive` / `drive_async` against an HTTP service, `rate_probe`
(a peak search's measurement) and `warm_up_url` (harness.load.warmup over HTTP)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Mapping, Sequence

from harness.load.closed_loop import run_closed_loop
from harness.load.open_loop import run_open_loop
from harness.load.outcome import LoadOutcome, Send
from harness.load.recorder import Recorder
from harness.load.settings import LoadSettings
from harness.load.summary import LoadSummary
from harness.load.warmup import Warmed, warm_up_async


async def run_load(settings: LoadSettings, send: Send, *, events_per_request: int | Sequence[int] | None = None,
                   start_at: float | None = None, recorder: Recorder | None = None) -> LoadOutcome:
    """Run `settings` with any async `send(i)`. `events_per_request` overrides the settings' count (per-body counts,
    e.g. `bodies.events`); `start_at` (epoch seconds) lets several generators start together, so their per-second
    series line up when merged; `recorder`: record into this one (another thread may read finished seconds)."""
    if start_at is not None:
        await asyncio.sleep(max(start_at - time.time(), 0.0))
    events = settings.events_per_request if events_per_request is None else events_per_request
    if settings.mode == "open":
        return await run_open_loop(
            send, rate=settings.rate, duration_s=settings.duration_s, warmup_s=settings.warmup_s,
            arrivals=settings.arrivals, seed=settings.seed, max_in_flight=settings.max_in_flight,
            events_per_request=events, max_lateness_s=settings.max_lateness_s, drain_s=settings.drain_s, recorder=recorder)
    return await run_closed_loop(
        send, concurrency=settings.concurrency, duration_s=settings.duration_s, warmup_s=settings.warmup_s,
        think_time_s=settings.think_time_s, events_per_request=events, drain_s=settings.drain_s, recorder=recorder)


async def drive_async(url: str, settings: LoadSettings, bodies: Sequence[tuple[bytes, str]], *,
                      headers: Mapping[str, str] | None = None, start_at: float | None = None,
                      recorder: Recorder | None = None) -> LoadOutcome:
    """One run against the HTTP service at `url` (its base URL or its /v1/score), inside a running event loop;
    `headers` go with every request (`auth_headers(token)`). Every answer is checked (harness.load.response)."""
    from harness.load.http_target import HttpTarget

    events = getattr(bodies, "events", None) or None
    async with HttpTarget(url, bodies, settings.timeout_s, connections=settings.connections, events=events,
                          headers=headers) as target:
        return await run_load(settings, target.send, events_per_request=target.events, start_at=start_at,
                              recorder=recorder)


def drive(url: str, settings: LoadSettings, bodies: Sequence[tuple[bytes, str]], *,
          headers: Mapping[str, str] | None = None) -> LoadSummary:
    """One run against the HTTP service at `url`, from synchronous code; judged by `settings.rules`."""
    return asyncio.run(drive_async(url, settings, bodies, headers=headers)).summary(settings.rules)


def rate_probe(url: str, settings: LoadSettings, bodies: Sequence[tuple[bytes, str]], *,
               headers: Mapping[str, str] | None = None) -> Callable[[float], LoadSummary]:
    """A `measure` for `find_peak`: one open-loop `drive` of `settings` at the rate asked for."""
    def measure(rate: float) -> LoadSummary:
        return drive(url, settings.model_copy(update={"mode": "open", "rate": rate, "concurrency": None}), bodies,
                     headers=headers)

    return measure


def warm_up_url(url: str, streams: Mapping[str, Any], events_per_request: int, encoding: str = "msgpack",
                settings: Mapping[str, Mapping[str, int | str]] | None = None, *, timeout_s: float = 10.0,
                headers: Mapping[str, str] | None = None, parallel: int = 8) -> Warmed:
    """`warm_up` of the HTTP service at `url` (harness.load.warmup), from synchronous code."""
    from harness.load.http_target import HttpTarget

    async def run() -> Warmed:
        async with HttpTarget(url, timeout_s=timeout_s, connections=parallel, headers=headers) as target:
            return await warm_up_async(target.exchange, streams, events_per_request, encoding, settings, parallel=parallel)

    return asyncio.run(run())
