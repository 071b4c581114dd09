"""Warm every stream before anything is measured: a learned detector trains on a stream's first scored event, so
a run that starts cold measures training, not serving (one did: 194K events/s where the warmed service held
575K).

Each stream is sent its events in order, one request at a time, in chunks of `events_per_request`, every request
with the stream's settings (harness.load.payload.stream_settings), until the answer no longer lists it in
`warming` (docs/serving.md): then it has scored its first event after its probationary period. Streams are
warmed side by side (`parallel` at once) when `post` is a coroutine function; a plain `post` warms them one
after the other. Any failure (a status other than 200, a bad answer, a timeout) is a `WarmupError` naming the
stream: a load that follows a failed warm-up would measure something else.

A shed request (503 with Retry-After: the service is busy, by its own account) is not a failure: it is sent
again after the Retry-After it gave, for up to SHED_PATIENCE_S in all.

`post(body, content_type, headers) -> (status, answer body, answer content type, Retry-After or None)`, plain or
async, is all it needs: `HttpTarget.exchange` (harness load), or the load task's `cluster.post` (harness.tasks.load).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

import numpy as np

from harness.serving.api import EventBatch, encode
from harness.load.errors import Shed, describe
from harness.load.payload import START_TIME, stream_settings
from harness.load.response import check_response

SHED_PATIENCE_S = 60.0  # how long a stream's warm-up keeps retrying requests the service sheds

Reply = tuple[int, bytes, str, "str | None"]
Post = Callable[[bytes, str, Mapping[str, str]], "Reply | Awaitable[Reply]"]


class WarmupError(RuntimeError):
    """A stream the warm-up could not warm; its message is one line: 'warm-up of stream X failed: ...'."""


@dataclass
class Warmed:
    """What the warm-up took: `events[s]` events went to stream s (its measured events continue after them)."""

    seconds: float
    requests: int
    events: dict[str, int]

    def line(self) -> str:
        return (f"warm-up: {len(self.events)} streams scored after {sum(self.events.values()):,} events in "
                f"{self.requests} requests, {self.seconds:.2f} s")


class _Warming:
    """One warm-up's shared state: how to call the service, how many streams warm at once, the requests sent, and
    whether a stream failed (then the others stop: a plain `post` never yields, so cancelling comes too late)."""

    def __init__(self, post: Post, headers: Mapping[str, str] | None, parallel: int, encoding: str,
                 every: Mapping[str, Mapping[str, int | str]], events_per_request: int, start_time: float, step_s: float):
        self.post, self.headers, self.gate = post, dict(headers or {}), asyncio.Semaphore(parallel)
        self.encoding, self.every, self.events_per_request = encoding, every, events_per_request
        self.start_time, self.step_s = start_time, step_s
        self.requests, self.failed = 0, False

    def fail(self, name: str, why: str) -> WarmupError:
        self.failed = True
        return WarmupError(f"warm-up of stream {name} failed: {why}")

    async def call(self, body: bytes, content_type: str) -> Reply:
        reply = self.post(body, content_type, self.headers)
        reply = await reply if inspect.isawaitable(reply) else reply
        return (*reply, None)[:4] if len(reply) == 3 else reply  # type: ignore[return-value]  # no Retry-After

    async def answer(self, name: str, request: tuple[bytes, str], events: int) -> Any:
        """The checked answer to one request, sent again (after Retry-After) while the service sheds it."""
        shed_since = None
        while True:
            try:
                status, body, content_type, retry_after = await self.call(*request)
                return check_response(status, body, content_type, events, retry_after)
            except Shed as exc:  # the service is busy: wait as it asks, then send it again
                shed_since = shed_since if shed_since is not None else time.monotonic()
                if time.monotonic() - shed_since > SHED_PATIENCE_S:
                    raise self.fail(name, f"shed for {SHED_PATIENCE_S:g} s: {describe(exc)}") from None
                await asyncio.sleep(_seconds(retry_after))
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, this stream is not warm
                raise self.fail(name, describe(exc)) from None

    async def stream(self, name: str, values: np.ndarray) -> int:
        """Send `name` its events in order until the service no longer lists it as warming; the events it took."""
        if not len(values):
            raise ValueError(f"stream {name} has no values")
        sent, need = 0, None
        async with self.gate:
            while True:
                if self.failed:
                    raise asyncio.CancelledError
                p = np.arange(sent, sent + self.events_per_request)
                batch = EventBatch([name], np.zeros(len(p), np.int64), self.start_time + p * self.step_s,
                                   values[p % len(values)], {name: self.every[name]})
                answer = await self.answer(name, encode(batch, self.encoding), len(p))
                sent += len(p)
                self.requests += 1
                left = answer.warming.get(name)
                if left is None:
                    return sent
                if need is not None and left >= need:
                    raise self.fail(name, f"the service still lists it as needing {left} events after {sent} (its "
                                          "count did not go down)")
                need = left


async def warm_up_async(post: Post, streams: Mapping[str, Any], events_per_request: int, encoding: str = "msgpack",
                        settings: Mapping[str, Mapping[str, int | str]] | None = None, *,
                        headers: Mapping[str, str] | None = None, parallel: int = 8,
                        start_time: float = START_TIME, step_s: float = 300.0) -> Warmed:
    """Warm every stream of `streams` (name -> values) through `post`; see the module docstring. `settings`,
    `start_time` and `step_s` must be those the measured bodies use (harness.load.payload.request_bodies)."""
    if not streams or events_per_request < 1 or parallel < 1:
        raise ValueError("need a stream, events_per_request >= 1 and parallel >= 1")
    warming = _Warming(post, headers, parallel, encoding, stream_settings(streams, settings), events_per_request,
                       start_time, step_s)
    started = time.perf_counter()
    tasks = {name: asyncio.ensure_future(warming.stream(name, np.asarray(values, np.float64)))
             for name, values in streams.items()}
    await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
    for task in tasks.values():  # a failure ends the warm-up: the other streams are not waited for
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    error = next((t.exception() for t in tasks.values() if not t.cancelled() and t.exception()), None)
    if error is not None:
        raise error
    return Warmed(time.perf_counter() - started, warming.requests, {name: t.result() for name, t in tasks.items()})


def warm_up(post: Post, streams: Mapping[str, Any], events_per_request: int, encoding: str = "msgpack",
            settings: Mapping[str, Mapping[str, int | str]] | None = None, **options: Any) -> Warmed:
    """`warm_up_async` from synchronous code (no event loop running), e.g. with a plain `post`."""
    return asyncio.run(warm_up_async(post, streams, events_per_request, encoding, settings, **options))


def _seconds(retry_after: str | None) -> float:
    """A Retry-After in seconds (1 when it is missing or a date), capped at 10."""
    try:
        return min(max(float(retry_after), 0.0), 10.0) if retry_after is not None else 1.0
    except ValueError:
        return 1.0

