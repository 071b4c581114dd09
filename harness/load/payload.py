"""Request bodies for a load run, encoded before it starts so that encoding costs the generator nothing while it
runs (at 10,000 events a request, JSON encoding alone would otherwise be the bottleneck).

Each stream is replayed as an endless sequence: its event number p (0, 1, 2, ...) has value `values[p % len]`
and timestamp `start_time + p * step_s`, so time keeps moving forward when a stream's values wrap around. The
bodies start each stream at its event `first[s]` (0 by default; after a warm-up, the events it took: the
measured load continues the streams). Request r takes `streams_per_request` streams in round-robin order and
carries the next `events_per_request / streams_per_request` events of each (interleaved in time order), so every
stream's events go out in order across requests and every request carries exactly `events_per_request` events.

Bodies are sent as body `i % len(bodies)`: once the list wraps, each stream starts again from its first events
(its timestamps jump back), and an open loop has several requests of one stream in flight at once. So every
stream is started with `"order": "arrival"` (the service then takes its events in the order they arrive, instead
of refusing old timestamps), and every request carrying a stream carries the same settings for it
(`stream_settings`): the service refuses a stream's settings that differ from those it started with.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from harness.serving.api import EventBatch, encode

START_TIME = 1704067200.0  # 2024-01-01T00:00:00Z


class RequestBodies(list):
    """A list of `(body, content type)`, plus `events[i]`: how many events body i carries."""

    def __init__(self, bodies=(), events=()):
        super().__init__(bodies)
        self.events: list[int] = list(events)


def stream_settings(names: Iterable[str], settings: Mapping[str, Mapping[str, int | str]] | None = None
                    ) -> dict[str, dict[str, int | str]]:
    """Each stream's settings as every request carrying it sends them: those given (probation, length), with
    `"order": "arrival"` unless they name an order (see the module docstring)."""
    given = settings or {}
    return {s: {"order": "arrival", **given.get(s, {})} for s in names}


def request_bodies(
    streams: Mapping[str, np.ndarray],
    events_per_request: int,
    encoding: str = "msgpack",
    start_time: float = START_TIME,
    step_s: float = 300.0,
    streams_per_request: int = 1,
    requests: int | None = None,
    settings: Mapping[str, Mapping[str, int | str]] | None = None,
    first: Mapping[str, int] | None = None,
) -> RequestBodies:
    """Pre-encoded bodies (see the module docstring); each stream's settings (`stream_settings`: `settings`'
    probation and length, and order arrival) go with every request carrying that stream, so a stream starts right
    even if its first request was dropped; `first[s]`: stream s's first event number."""
    names = list(streams)
    values = [np.asarray(streams[s], np.float64) for s in names]
    if not names or min(len(v) for v in values) == 0:
        raise ValueError("need at least one stream, each with at least one value")
    if not 1 <= streams_per_request <= len(names):
        raise ValueError(f"streams_per_request must be in 1..{len(names)}, got {streams_per_request}")
    if events_per_request < 1 or events_per_request % streams_per_request:
        raise ValueError(f"events_per_request ({events_per_request}) must be a positive multiple of "
                         f"streams_per_request ({streams_per_request})")
    per_stream = events_per_request // streams_per_request
    if requests is None:
        requests = max(1, math.ceil(sum(len(v) for v in values) / events_per_request))
    settings = stream_settings(names, settings)
    cursor = [int((first or {}).get(s, 0)) for s in names]  # next event number of each stream
    out = RequestBodies()
    for r in range(requests):
        chosen = [(r * streams_per_request + j) % len(names) for j in range(streams_per_request)]
        positions = np.arange(per_stream)
        index = np.tile(np.arange(len(chosen)), per_stream)  # event k of every stream, then k + 1, ...
        timestamp = np.empty(events_per_request)
        value = np.empty(events_per_request)
        for j, s in enumerate(chosen):
            p = cursor[s] + positions
            timestamp[j::len(chosen)] = start_time + p * step_s
            value[j::len(chosen)] = values[s][p % len(values[s])]
            cursor[s] += per_stream
        ids = [names[s] for s in chosen]
        batch = EventBatch(ids, index, timestamp, value, {s: settings[s] for s in ids})
        out.append(encode(batch, encoding))
        out.events.append(events_per_request)
    return out


def synthetic_streams(n_streams: int = 4, length: int = 4032, seed: int = 0) -> dict[str, np.ndarray]:
    """Stand-in data when no corpus is at hand: a daily sine at 5-minute steps with noise, one id per stream."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return {f"synthetic-{k}": 50 + 10 * np.sin(2 * np.pi * t / 288 + k) + rng.normal(0, 1, length)
            for k in range(n_streams)}
