"""The scoring API's wire format, one module for both sides: the service decodes and checks requests with it, the
load generator and tests encode them with it (docs/serving.md).

Two encodings of the same request, a batch of events of one or more streams:

- JSON (`application/json`): `{"events": [{"stream": "<id>", "timestamp": <ISO-8601 or epoch seconds>,
  "value": <number>}, ...], "streams": {"<id>": {"probation": <int>, "length": <int>}}}`; `streams` and both its
  keys are optional: how a stream new to the service starts (its probationary records, and its length when it
  is known, as for a replayed file). Answer: `{"scores": [<float>, ...]}`.
- Packed (`application/msgpack`): a msgpack map `{"streams": [<id>, ...], "index": <bin: uint32 per event, which
  stream>, "timestamp": <bin: float64 epoch seconds per event>, "value": <bin: float64 per event>, "settings":
  {"<id>": {"probation": <int>, "length": <int>}}}` (little-endian; `settings` optional). Answer:
  `{"scores": <bin: float64 per event>}`. No per-event objects on either side, which is what lets one request
  carry 10,000 events cheaply.

Every problem is a `RequestError` with an HTTP status and one line naming the field; nothing here imports Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

JSON = "application/json"
PACKED = "application/msgpack"
ENCODINGS = {"json": JSON, "msgpack": PACKED}
MAX_BODY_BYTES = 32 * 1024 * 1024  # an oversize body is refused (413) before it is parsed, or once it passes this
BODY_TIMEOUT_S = 10.0  # a body must arrive whole within this long after its headers (408 otherwise)
MAX_STREAM_ID = 256
TIME_RANGE = (0.0, 7258118400.0)  # timestamps taken: 1970-01-01 up to 2200-01-01, UTC


class RequestError(ValueError):
    """A request the service refuses: `status` (4xx) and a one-line `message` naming the problem."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class EventBatch:
    """Events in arrival order: event i belongs to `streams[index[i]]`. `settings` says how new streams start
    (`probation`, `length`; either may be absent)."""

    streams: list[str]
    index: np.ndarray  # int64 (n,)
    timestamp: np.ndarray  # float64 epoch seconds (n,)
    value: np.ndarray  # float64 (n,)
    settings: dict[str, dict[str, int | str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.value)

    @classmethod
    def of(cls, stream, timestamp, value, settings: dict[str, dict[str, int | str]] | None = None) -> "EventBatch":
        """From one stream id per event."""
        names, index = np.unique(np.asarray(stream, dtype=object).astype(str), return_inverse=True)
        return cls([str(n) for n in names], index.astype(np.int64), np.asarray(timestamp, np.float64), np.asarray(value, np.float64), dict(settings or {}))

    @classmethod
    def concat(cls, batches: list["EventBatch"]) -> "EventBatch":
        """The events of several batches, in order (what a shard scores together); a stream's settings come from
        the first batch that gives them."""
        names: dict[str, int] = {}
        indices = []
        for b in batches:
            remap = np.array([names.setdefault(s, len(names)) for s in b.streams], np.int64)
            indices.append(remap[b.index])
        settings: dict[str, dict[str, int | str]] = {}
        for b in reversed(batches):
            settings.update(b.settings)
        return cls(list(names), np.concatenate(indices), np.concatenate([b.timestamp for b in batches]),
                   np.concatenate([b.value for b in batches]), settings)

    def select(self, positions: np.ndarray) -> "EventBatch":
        """The events at `positions` (in that order), streams renumbered."""
        used, index = np.unique(self.index[positions], return_inverse=True)
        names = [self.streams[i] for i in used]
        return EventBatch(names, index.astype(np.int64), self.timestamp[positions], self.value[positions],
                          {s: v for s, v in self.settings.items() if s in set(names)})


# --- encoding (clients) ---------------------------------------------------------------------------------------


def encode(batch: EventBatch, encoding: str = "json") -> tuple[bytes, str]:
    """(body, content type) of a request carrying `batch`."""
    if encoding == "json":
        import orjson

        events = [
            {"stream": batch.streams[i], "timestamp": t, "value": v}
            for i, t, v in zip(batch.index.tolist(), batch.timestamp.tolist(), batch.value.tolist())
        ]
        body: dict = {"events": events}
        if batch.settings:
            body["streams"] = batch.settings
        return orjson.dumps(body), JSON
    if encoding == "msgpack":
        import msgpack

        body = {
            "streams": batch.streams,
            "index": np.ascontiguousarray(batch.index, "<u4").tobytes(),
            "timestamp": np.ascontiguousarray(batch.timestamp, "<f8").tobytes(),
            "value": np.ascontiguousarray(batch.value, "<f8").tobytes(),
        }
        if batch.settings:
            body["settings"] = batch.settings
        return msgpack.packb(body), PACKED
    raise ValueError(f"unknown encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")


@dataclass
class Answer:
    """What a 200 carries: one score per event, in the request's order; `warming`: each stream of the request that
    has not scored yet (its probationary events, then the first event after them, which trains a learned model),
    with the events it still needs; `started`: the streams this request started, being new to the service (for
    a stream the client has sent before, its state was lost: idle expiry, or a replica restart)."""

    scores: np.ndarray
    warming: dict[str, int] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)


def encode_answer(answer: Answer, content_type: str) -> bytes:
    if content_type == PACKED:
        import msgpack

        return msgpack.packb({"scores": np.ascontiguousarray(answer.scores, "<f8").tobytes(),
                              "warming": answer.warming, "started": answer.started})
    import orjson

    return orjson.dumps({"scores": np.asarray(answer.scores, np.float64), "warming": answer.warming,
                         "started": answer.started}, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_answer(body: bytes, content_type: str) -> Answer:
    """The answer of a 200; ValueError (or a decoder's own error) when it is not one."""
    if content_type.startswith(PACKED):
        import msgpack

        doc = msgpack.unpackb(body)
        raw = doc["scores"]
        if not isinstance(raw, bytes) or len(raw) % 8:
            raise ValueError("scores: expected binary float64 data")
        scores = np.frombuffer(raw, "<f8")
    else:
        import orjson

        doc = orjson.loads(body)
        scores = np.asarray(doc["scores"], dtype=np.float64)
    warming, started = doc.get("warming") or {}, doc.get("started") or []
    if scores.ndim != 1 or not isinstance(warming, dict) or not isinstance(started, list):
        raise ValueError("expected scores (a list), warming (an object) and started (a list)")
    return Answer(scores, {str(k): int(v) for k, v in warming.items()}, [str(s) for s in started])


def decode_scores(body: bytes, content_type: str) -> np.ndarray:
    """The scores of a 200."""
    return decode_answer(body, content_type).scores


def encode_scores(scores: np.ndarray, content_type: str) -> bytes:
    """An answer with scores only (no stream warming or started)."""
    return encode_answer(Answer(np.asarray(scores, np.float64)), content_type)


# --- decoding and checking (the service) ----------------------------------------------------------------------


def decode(body: bytes, content_type: str | None) -> EventBatch:
    """A checked `EventBatch` from a request body, or a RequestError naming what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(f"body of {len(body)} bytes exceeds the limit of {MAX_BODY_BYTES}", 413)
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == PACKED:
        batch = _decode_packed(body)
    elif kind in (JSON, ""):
        batch = _decode_json(body)
    else:
        raise RequestError(f"Content-Type {content_type!r} is not supported (expected {JSON} or {PACKED})", 415)
    if not len(batch):
        raise RequestError("events: expected at least one event, got an empty list")
    if not np.isfinite(batch.value).all():
        i = int(np.flatnonzero(~np.isfinite(batch.value))[0])
        raise RequestError(f"events[{i}].value: expected a finite number, got {batch.value[i]}")
    low, high = TIME_RANGE
    outside = ~((batch.timestamp >= low) & (batch.timestamp < high))  # NaN and infinities included
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise RequestError(f"events[{i}].timestamp: expected a time from 1970-01-01 to 2200-01-01 (epoch seconds "
                           f"{low:.0f} to {high:.0f}), got {batch.timestamp[i]:g}")
    for s in batch.streams:
        _check_stream_id(s, "events[].stream")
    return batch


def check_size(batch: EventBatch, max_events: int, max_streams: int) -> None:
    """RequestError (413) for a request that carries more events, or touches more streams, than one request may:
    what one request costs, it costs every other client waiting behind it."""
    if len(batch) > max_events:
        raise RequestError(f"events: {len(batch)} events in one request; this service takes at most {max_events} "
                           "(serve.max_events_per_request): split the request", 413)
    if len(batch.streams) > max_streams:
        raise RequestError(f"events: {len(batch.streams)} streams in one request; this service takes at most "
                           f"{max_streams} (serve.max_streams_per_request): split the request", 413)


def _check_stream_id(s: object, where: str) -> None:
    if not isinstance(s, str) or not s:
        raise RequestError(f"{where}: expected a non-empty string, got {_kind(s) if s != '' else 'an empty string'}")
    if len(s) > MAX_STREAM_ID:
        raise RequestError(f"{where}: stream id longer than {MAX_STREAM_ID} characters")


def _decode_json(body: bytes) -> EventBatch:
    import orjson

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"body is not valid JSON ({exc}; NaN and Infinity are not JSON numbers)") from None
    if not isinstance(doc, dict):
        raise RequestError(f"body: expected a JSON object with 'events', got {_kind(doc)}")
    extra = set(doc) - {"events", "streams"}
    if extra:
        raise RequestError(f"body: unknown field {sorted(extra)[0]!r} (expected 'events' and optionally 'streams')")
    if "events" not in doc:
        raise RequestError("events: required field is missing")
    events = doc["events"]
    if not isinstance(events, list):
        raise RequestError(f"events: expected a list of events, got {_kind(events)}")
    fast = _columns_fast(events)
    if fast is not None:
        names, index, ts, vs = fast
        batch = EventBatch(names, index, ts, vs, _settings(doc.get("streams"), "streams"))
        if body.count(b":") != _pairs(doc, batch):
            _duplicate_keys(body)
        return batch
    _duplicate_keys(body)
    n = len(events)  # the slow path finds and names the first bad event
    ids: dict[str, int] = {}
    index = np.empty(n, np.int64)
    ts = np.empty(n, np.float64)
    vs = np.empty(n, np.float64)
    for i, e in enumerate(events):
        if type(e) is not dict or len(e) != 3:
            _bad_event(i, e)
        try:
            s, t, v = e["stream"], e["timestamp"], e["value"]
        except KeyError:
            _bad_event(i, e)
        if type(s) is not str or not s:
            raise RequestError(f"events[{i}].stream: expected a non-empty string, got {_kind(s) if s != '' else 'an empty string'}")
        k = ids.get(s)
        if k is None:
            k = ids[s] = len(ids)
        index[i] = k
        ts[i] = t if type(t) in (int, float) else _timestamp(t, i)
        if type(v) not in (int, float):
            raise RequestError(f"events[{i}].value: expected a number, got {_kind(v)}")
        vs[i] = v
    return EventBatch(list(ids), index, ts, vs, _settings(doc.get("streams"), "streams"))


def _columns_fast(events: list) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None:
    """The columns of well-formed events without a per-event Python loop of checks (about 3x faster); None when
    any event is not plain (the slow path then says which one, and why)."""
    if not events or not all(type(e) is dict and len(e) == 3 for e in events):
        return None
    try:
        ss = [e["stream"] for e in events]
        ts = [e["timestamp"] for e in events]
        vs = [e["value"] for e in events]
    except KeyError:
        return None
    if not set(map(type, vs)) <= _NUMBER or not set(map(type, ts)) <= _NUMBER or set(map(type, ss)) != {str}:
        return None
    ids: dict[str, int] = {}
    index = np.fromiter((ids.setdefault(x, len(ids)) for x in ss), np.int64, len(ss))
    if "" in ids:
        return None
    return list(ids), index, np.asarray(ts, np.float64), np.asarray(vs, np.float64)


_NUMBER = {int, float}


def _pairs(doc: dict, batch: EventBatch) -> int:
    """The key-value pairs of a plain request (every event with numbers and a stream id), plus the colons inside
    its strings: its body has exactly this many colons unless a key was repeated (a parser keeps the last of
    duplicate keys, so the parsed document has fewer pairs than the text). One count over the body then proves
    no key is repeated, without a slower parser."""
    n = len(doc) + 3 * len(batch)
    n += sum(s.count(":") * int(c) for s, c in zip(batch.streams, np.bincount(batch.index, minlength=len(batch.streams))) if ":" in s)
    for s, spec in batch.settings.items():
        n += 1 + len(spec) + s.count(":")
    return n


def _duplicate_keys(body: bytes) -> None:
    """RequestError naming the first key repeated within one JSON object (the exact, slower check)."""
    import json

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen = set()
        for key, _ in items:
            if key in seen:
                raise RequestError(f"body: the key {key!r} appears twice in one object (a JSON object's keys must be unique)")
            seen.add(key)
        return dict(items)

    try:
        json.loads(body, object_pairs_hook=pairs)
    except RequestError:
        raise
    except (ValueError, RecursionError):
        pass  # only orjson's verdict on the syntax counts (json takes NaN, for one)


def _bad_event(i: int, e: object) -> None:
    if not isinstance(e, dict):
        raise RequestError(f"events[{i}]: expected an object with stream, timestamp and value, got {_kind(e)}")
    missing = [k for k in ("stream", "timestamp", "value") if k not in e]
    if missing:
        raise RequestError(f"events[{i}].{missing[0]}: required field is missing")
    extra = sorted(set(e) - {"stream", "timestamp", "value"})
    raise RequestError(f"events[{i}]: unknown field {extra[0]!r} (expected stream, timestamp, value)")


def _timestamp(t: object, i: int) -> float:
    if isinstance(t, str):
        try:
            d = datetime.fromisoformat(t)
        except ValueError:
            raise RequestError(f"events[{i}].timestamp: expected ISO-8601 or epoch seconds, got {t[:40]!r}") from None
        return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()
    raise RequestError(f"events[{i}].timestamp: expected ISO-8601 string or epoch seconds, got {_kind(t)}")


ORDERS = ("timestamp", "arrival")  # a stream's `order`: refuse events older than its last one, or take any


def _settings(streams: object, where: str) -> dict[str, dict[str, int | str]]:
    if streams is None:
        return {}
    if not isinstance(streams, dict):
        raise RequestError(f"{where}: expected an object of stream id -> {{probation, length, order}}, got {_kind(streams)}")
    out = {}
    for s, spec in streams.items():
        _check_stream_id(s, where)
        if not isinstance(spec, dict) or not set(spec) <= {"probation", "length", "order"}:
            raise RequestError(f"{where}.{s}: expected an object with 'probation', 'length' and/or 'order'")
        for key, n in spec.items():
            if key == "order":
                if n not in ORDERS:
                    raise RequestError(f"{where}.{s}.order: expected one of {', '.join(map(repr, ORDERS))}, got {_kind(n)}")
            elif type(n) is not int or n < 0:
                raise RequestError(f"{where}.{s}.{key}: expected an integer >= 0, got {_kind(n)}")
        out[s] = dict(spec)
    return out


def _decode_packed(body: bytes) -> EventBatch:
    import msgpack

    def unique(items: list[tuple[object, object]]) -> dict:
        keys = [k for k, _ in items]
        if len(set(map(repr, keys))) != len(keys):
            raise RequestError("body: a key appears twice in one msgpack map (a map's keys must be unique)")
        return dict(items)

    try:
        doc = msgpack.unpackb(body, raw=False, object_pairs_hook=unique, strict_map_key=False)
    except RequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for garbage
        raise RequestError(f"body is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise RequestError(f"body: expected a msgpack map with streams, index, timestamp, value, got {_kind(doc)}")
    need = {"streams", "index", "timestamp", "value"}
    missing, extra = sorted(need - set(doc)), sorted(set(doc) - need - {"settings"})
    if missing:
        raise RequestError(f"{missing[0]}: required field is missing")
    if extra:
        raise RequestError(f"body: unknown field {extra[0]!r}")
    streams = doc["streams"]
    if not isinstance(streams, list):
        raise RequestError(f"streams: expected a list of stream ids, got {_kind(streams)}")
    for s in streams:
        _check_stream_id(s, "streams[]")
    cols = {}
    for key, dtype in (("index", "<u4"), ("timestamp", "<f8"), ("value", "<f8")):
        raw = doc[key]
        if not isinstance(raw, bytes) or len(raw) % np.dtype(dtype).itemsize:
            raise RequestError(f"{key}: expected binary {np.dtype(dtype).name} data, got {_kind(raw)}")
        cols[key] = np.frombuffer(raw, dtype)
    n = len(cols["value"])
    if len(cols["index"]) != n or len(cols["timestamp"]) != n:
        raise RequestError(f"index, timestamp, value: expected one entry per event each, got {len(cols['index'])}, {len(cols['timestamp'])}, {n}")
    if n and int(cols["index"].max()) >= len(streams):
        raise RequestError(f"index: refers to stream {int(cols['index'].max())}, but only {len(streams)} are listed")
    if n:
        unused = np.flatnonzero(np.bincount(cols["index"], minlength=len(streams)) == 0)
        if len(unused):
            raise RequestError(f"streams[{int(unused[0])}]: listed, but no event refers to it")
        if len(set(streams)) != len(streams):
            raise RequestError("streams: a stream id is listed twice")
    return EventBatch(list(streams), cols["index"].astype(np.int64), cols["timestamp"].astype(np.float64),
                      cols["value"].astype(np.float64), _settings(doc.get("settings"), "settings"))


def _kind(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    names = {list: "a list", str: "a string", type(None): "null", int: "an integer", float: "a number", bool: "a boolean", dict: "an object", bytes: "binary data"}
    return names.get(type(value), f"a {type(value).__name__}")
