"""Live streams' state: one detector per stream, fed the events of many requests in order (plain Python; the
Serve shard in harness/serving/app.py holds one `StreamTable`).

A stream starts on its first event with its settings (`probation`: records learned before any is scored, by
default the variant's; `length` when known, as for a replayed file; `order`: `timestamp`, the default, refuses
an event earlier than the stream's latest (a repeated time is taken: real series repeat timestamps), `arrival`
takes events as they come). Its state lives only here: the service routes every event of a stream to the same
shard (docs/serving.md), so it is never split.

What bounds the table: at most `max_streams` streams (429 beyond), a probation of at most `max_probation` (400),
and streams idle for `ttl_s` are forgotten (their next event starts them again, warming; the answer lists them in
`started`).

Training. A learned detector trains its model on the record after its probationary period (about 0.1 s for the
autoencoder here). Given an `executor`, the table runs such a stream's events there, off the caller's thread,
and the stream stays *busy* until they are done: its later events queue behind them on the same one-thread
executor, so they are still applied in arrival order, while every other stream is scored at once. The caller
gets the scores it is owed as futures (`Scored.jobs`). Without an executor everything runs inline.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.serving.api import EventBatch, RequestError
from harness.detectors.base import Stream, StreamingDetector


@dataclass
class _Live:
    detector: StreamingDetector
    probation: int
    length: int | None
    order: str
    seen: int = 0
    last_t: float = -np.inf  # the timestamp of its latest event
    touched: float = 0.0  # when its latest event arrived (the table's clock)
    job: Future | None = None  # its latest events still being scored off the caller's thread

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.done()

    def needs(self) -> int | None:
        """Events the stream still needs before it has scored (None: it has). A busy stream needs none more."""
        if self.seen > self.probation:
            return 0 if self.busy else None
        return self.probation + 1 - self.seen


@dataclass
class _Pending:
    """A stream as a batch accepted before this one (not scored yet) leaves it: its settings, its last time."""

    probation: int
    length: int | None
    order: str
    last_t: float


@dataclass
class Scored:
    """A batch's scores (NaN where a job still owes them), the streams it started, and the jobs: (positions in
    the batch, future of their scores)."""

    scores: np.ndarray
    started: list[str]
    jobs: list[tuple[np.ndarray, Future]] = field(default_factory=list)


class StreamTable:
    """The streams of one shard. `check` refuses a batch without touching any stream; `score` then scores it."""

    def __init__(self, make_detector: Callable[[], StreamingDetector], default_probation: int,
                 probation_percent: float = 0.15, max_streams: int = 100_000, max_probation: int | None = None,
                 ttl_s: float | None = None, executor: Executor | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.make_detector = make_detector
        self.default_probation = default_probation
        self.probation_percent = probation_percent
        self.max_streams = max_streams
        self.max_probation = max_probation
        self.ttl_s = ttl_s
        self.executor = executor
        self.clock = clock
        self.streams: OrderedDict[str, _Live] = OrderedDict()  # least recently sent first
        self.started_at = time.time()
        self.events = 0
        self.expired = 0

    def expire(self) -> int:
        """Forget the streams idle for longer than `ttl_s` (none that is busy); how many were forgotten."""
        if self.ttl_s is None:
            return 0
        cutoff, gone = self.clock() - self.ttl_s, 0
        while self.streams:
            name, live = next(iter(self.streams.items()))
            if live.touched > cutoff or live.busy:
                break
            del self.streams[name]
            gone += 1
        self.expired += gone
        return gone

    def check(self, batch: EventBatch, pending: dict[str, _Pending] | None = None) -> None:
        """RequestError if the batch would restart a known stream with other settings (409), start one with a
        probation over the limit (400), take a stream's events out of timestamp order (400 within the batch, 409
        against what the stream has), or exceed the streams a shard keeps (429). `pending`: what batches
        accepted before this one (not scored yet) leave each of their streams; this batch's streams are added."""
        pending = {} if pending is None else pending
        first_t, last_t, disordered = _per_stream_times(batch)
        new, leaving = 0, {}
        for k, s in enumerate(batch.streams):
            live, given = self.streams.get(s), batch.settings.get(s, {})
            known = pending.get(s) or (_Pending(live.probation, live.length, live.order, live.last_t) if live else None)
            if known is None:
                new += 1
                known = _Pending(*self._settings(s, given), -np.inf)
            elif any(given.get(key, getattr(known, key)) != getattr(known, key) for key in ("probation", "length", "order")):
                raise RequestError(
                    f"streams.{s}: the stream already runs with probation {known.probation}, length {known.length} "
                    f"and order {known.order}; settings apply to a stream's first events only", 409)
            if known.order == "timestamp":
                if disordered[k] >= 0:
                    raise RequestError(f"events[{disordered[k]}].timestamp: stream {s}'s events go back in time within "
                                       "the request (none may be earlier than the one before; or start the stream "
                                       "with order: arrival)")
                if first_t[k] < known.last_t:
                    raise RequestError(f"stream {s}: an event at {_when(first_t[k])} is earlier than the stream's "
                                       f"latest, {_when(known.last_t)} (a stream's events must arrive in timestamp "
                                       "order; or start it with order: arrival)", 409)
            leaving[s] = _Pending(known.probation, known.length, known.order, max(known.last_t, last_t[k]))
        if new and len(self.streams) + sum(1 for s in pending if s not in self.streams) + new > self.max_streams:
            raise RequestError(f"this shard already keeps {len(self.streams)} streams (limit {self.max_streams})", 429)
        pending.update(leaving)

    def score(self, batch: EventBatch) -> Scored:
        """Each stream's events scored in order by its own detector (see the module docstring for the jobs)."""
        out = np.empty(len(batch))
        stamps = (batch.timestamp * 1e9).astype("datetime64[ns]")
        order, bounds = _by_stream(batch)
        started, jobs, now = [], [], self.clock()
        for k, name in enumerate(batch.streams):
            positions = order[bounds[k] : bounds[k + 1]]
            live = self.streams.get(name)
            if live is None:
                live = self._start(name, batch.settings.get(name, {}))
                started.append(name)
            self.streams.move_to_end(name)
            t, v = stamps[positions], batch.value[positions]
            if self.executor is not None and (live.busy or self._trains(live, len(positions))):
                live.job = self.executor.submit(live.detector.score_many, t, v)
                jobs.append((positions, live.job))
                out[positions] = np.nan
            else:
                out[positions] = live.detector.score_many(t, v)
            live.seen += len(positions)
            live.last_t = max(live.last_t, float(batch.timestamp[positions].max()))
            live.touched = now
        self.events += len(batch)
        return Scored(out, started, jobs)

    def warming(self, streams: list[str]) -> dict[str, int]:
        """Each of `streams` that has not scored yet, with the events it still needs (0: it is training)."""
        out = {}
        for s in streams:
            live = self.streams.get(s)
            needs = live.needs() if live is not None else None
            if needs is not None:
                out[s] = needs
        return out

    @staticmethod
    def _trains(live: _Live, n: int) -> bool:
        """Whether these `n` events reach the record that trains the stream's model."""
        return live.detector.trains_at_probation and live.seen <= live.probation < live.seen + n

    def _settings(self, stream: str, given: dict) -> tuple[int, int | None, str]:
        """(probation, length, order) of a new stream: as given; else the probation percentage of a given length
        (NAB's rule, as the offline cell applies it); else the service's default."""
        from harness.scoring.nab import probation_rows

        length = given.get("length")
        if "probation" in given:
            probation = given["probation"]
        else:
            probation = probation_rows(length, self.probation_percent) if length is not None else self.default_probation
        if self.max_probation is not None and probation > self.max_probation:
            raise RequestError(f"streams.{stream}.probation: {probation} records exceeds this service's limit of "
                               f"{self.max_probation} (serve.max_probation)")
        return probation, length, given.get("order", "timestamp")

    def _start(self, name: str, given: dict) -> _Live:
        live = _Live(self.make_detector(), *self._settings(name, given))
        live.detector.start(Stream(name, live.probation, live.length))
        self.streams[name] = live
        return live

    def status(self) -> dict:
        """What a client may ask of the shard: streams, those that have not scored yet (warming), events scored,
        streams forgotten after `ttl_s` idle."""
        return {
            "started_at": self.started_at,
            "streams": len(self.streams),
            "warming": sum(live.needs() is not None for live in self.streams.values()),
            "events": self.events,
            "expired": self.expired,
        }


def _by_stream(batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
    """The batch's positions grouped by stream, each stream's in arrival order, and where each group starts:
    stream k's events are at `order[bounds[k] : bounds[k + 1]]`."""
    order = np.argsort(batch.index, kind="stable")
    return order, np.searchsorted(batch.index[order], np.arange(len(batch.streams) + 1))


def _per_stream_times(batch: EventBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stream of the batch: its first and last event's timestamp, and the position of its first event that
    is earlier than the one before it (-1: none)."""
    order, bounds = _by_stream(batch)
    ts, idx = batch.timestamp[order], batch.index[order]
    first, last = ts[bounds[:-1]], ts[bounds[1:] - 1]
    disordered = np.full(len(batch.streams), -1, np.int64)
    bad = np.flatnonzero((idx[1:] == idx[:-1]) & (ts[1:] < ts[:-1]))
    for b in bad[::-1]:  # the earliest bad event of each stream wins
        disordered[idx[b + 1]] = order[b + 1]
    return first, last, disordered


def _when(t: float) -> str:
    """An epoch time as ISO-8601 (UTC), for error messages."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z") if np.isfinite(t) else "none"
