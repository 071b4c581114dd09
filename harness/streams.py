"""Live streams' state: one detector per stream, fed the events of many requests in order (plain Python; the
Serve shard in serve/app.py holds one `StreamTable`).

A stream starts on its first event with its settings (`probation`: records learned before any is scored, by
default the variant's; `length` when known, as for a replayed file). Its state lives only here: the service
routes every event of a stream to the same shard (docs/serving.md), so it is never split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from harness.api import EventBatch, RequestError
from harness.detectors.base import Stream, StreamingDetector


@dataclass
class _Live:
    detector: StreamingDetector
    probation: int
    length: int | None
    seen: int = 0


class StreamTable:
    """The streams of one shard. `check` refuses a batch without touching any state; `score` then scores it."""

    def __init__(self, make_detector: Callable[[], StreamingDetector], default_probation: int,
                 probation_percent: float = 0.15, max_streams: int = 100_000):
        self.make_detector = make_detector
        self.default_probation = default_probation
        self.probation_percent = probation_percent
        self.max_streams = max_streams
        self.streams: dict[str, _Live] = {}
        self.started_at = time.time()
        self.events = 0

    def check(self, batch: EventBatch, pending: dict[str, tuple[int, int | None]] | None = None) -> None:
        """RequestError (409) if the batch would restart a known stream with other settings, or (429) exceed
        the number of streams a shard keeps. `pending`: streams that batches accepted before this one (and not
        scored yet) start, with their (probation, length); this batch's new streams are added to it."""
        pending = {} if pending is None else pending
        new = 0
        for s in batch.streams:
            live = self.streams.get(s)
            known = (live.probation, live.length) if live is not None else pending.get(s)
            if known is None:
                new += 1
                pending[s] = self._settings(batch.settings.get(s, {}))
                continue
            given = batch.settings.get(s, {})
            if given.get("probation", known[0]) != known[0] or given.get("length", known[1]) != known[1]:
                raise RequestError(
                    f"streams.{s}: the stream already runs with probation {known[0]} and length {known[1]}; "
                    "settings apply to a stream's first events only", 409)
        if len(self.streams) + new > self.max_streams:
            raise RequestError(f"this shard already keeps {len(self.streams)} streams (limit {self.max_streams})", 429)

    def score(self, batch: EventBatch) -> np.ndarray:
        """One score per event, each stream's events scored in order by its own detector."""
        out = np.empty(len(batch))
        stamps = (batch.timestamp * 1e9).astype("datetime64[ns]")
        order = np.argsort(batch.index, kind="stable")
        bounds = np.searchsorted(batch.index[order], np.arange(len(batch.streams) + 1))
        for k, name in enumerate(batch.streams):
            positions = order[bounds[k] : bounds[k + 1]]
            live = self.streams.get(name) or self._start(name, batch.settings.get(name, {}))
            out[positions] = live.detector.score_many(stamps[positions], batch.value[positions])
            live.seen += len(positions)
        self.events += len(batch)
        return out

    def _settings(self, given: dict[str, int]) -> tuple[int, int | None]:
        """(probation, length) of a new stream: as given; else the probation percentage of a given length
        (NAB's rule, as the offline cell applies it); else the service's default."""
        from harness.scoring.nab import probation_rows

        length = given.get("length")
        if "probation" in given:
            return given["probation"], length
        return (probation_rows(length, self.probation_percent) if length is not None else self.default_probation), length

    def _start(self, name: str, given: dict[str, int]) -> _Live:
        live = _Live(self.make_detector(), *self._settings(given))
        live.detector.start(Stream(name, live.probation, live.length))
        self.streams[name] = live
        return live

    def status(self) -> dict:
        """What a client may ask of the shard: streams, those still in probation (warming), events scored."""
        return {
            "started_at": self.started_at,
            "streams": len(self.streams),
            "warming": sum(live.seen < live.probation for live in self.streams.values()),
            "events": self.events,
        }
