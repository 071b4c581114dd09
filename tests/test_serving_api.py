"""The scoring API's wire format and the service's stream state, in plain Python (the same code the Serve
replicas run; tests/test_serve.py drives it over real HTTP)."""

from __future__ import annotations

import json
import threading

import msgpack
import numpy as np
import pytest

from harness.serving.api import JSON, MAX_BODY_BYTES, PACKED, EventBatch, RequestError, decode, decode_scores, encode, encode_scores
from harness.detectors import Stream, StreamingDetector, resolve_detector
from harness.serving.config import ServiceConfig, Variant, shard_of
from harness.serving.streams import StreamTable


def batch(n: int = 6, streams=("a", "b")) -> EventBatch:
    rng = np.random.default_rng(0)
    return EventBatch.of([streams[i % len(streams)] for i in range(n)], 1.7e9 + 300.0 * np.arange(n), rng.normal(size=n))


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_both_encodings_round_trip(encoding: str) -> None:
    b = batch()
    b.settings = {"a": {"probation": 3, "length": 10}}
    body, kind = encode(b, encoding)
    got = decode(body, kind)
    assert [got.streams[i] for i in got.index] == [b.streams[i] for i in b.index]
    np.testing.assert_array_equal(got.value, b.value)
    np.testing.assert_array_equal(got.timestamp, b.timestamp)
    assert got.settings == {"a": {"probation": 3, "length": 10}}
    scores = np.linspace(0, 1, len(b))
    np.testing.assert_array_equal(decode_scores(encode_scores(scores, kind), kind), scores)


def test_iso_timestamps_and_epoch_seconds_agree() -> None:
    body = json.dumps({"events": [
        {"stream": "s", "timestamp": "2026-01-01T00:05:00", "value": 1},
        {"stream": "s", "timestamp": "2026-01-01T00:05:00+00:00", "value": 2.5},
        {"stream": "s", "timestamp": 1767225900, "value": 3},
    ]}).encode()
    got = decode(body, JSON)
    assert got.timestamp.tolist() == [1767225900.0] * 3
    assert got.value.tolist() == [1.0, 2.5, 3.0]


def ev(**over) -> dict:
    return {"stream": "s", "timestamp": 1.0, "value": 1.0, **over}


BAD_JSON = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "body: expected a JSON object"),
    (b'"events"', 400, "body: expected a JSON object"),
    (json.dumps({}).encode(), 400, "events: required field is missing"),
    (json.dumps({"events": [ev()], "extra": 1}).encode(), 400, "unknown field 'extra'"),
    (json.dumps({"events": {}}).encode(), 400, "events: expected a list"),
    (json.dumps({"events": []}).encode(), 400, "events: expected at least one event"),
    (json.dumps({"events": [5]}).encode(), 400, "events[0]: expected an object"),
    (json.dumps({"events": [ev(), {"stream": "s", "value": 1}]}).encode(), 400, "events[1].timestamp: required field is missing"),
    (json.dumps({"events": [ev(extra=2)]}).encode(), 400, "events[0]: unknown field 'extra'"),
    (json.dumps({"events": [ev(stream="")]}).encode(), 400, "events[0].stream: expected a non-empty string, got an empty string"),
    (json.dumps({"events": [ev(stream=7)]}).encode(), 400, "events[0].stream: expected a non-empty string, got an integer"),
    (json.dumps({"events": [ev(value="1")]}).encode(), 400, "events[0].value: expected a number, got a string"),
    (json.dumps({"events": [ev(value=True)]}).encode(), 400, "events[0].value: expected a number, got a boolean"),
    (json.dumps({"events": [ev(value=None)]}).encode(), 400, "events[0].value: expected a number, got null"),
    (b'{"events": [{"stream": "s", "timestamp": 1, "value": NaN}]}', 400, "NaN and Infinity are not JSON"),
    (b'{"events": [{"stream": "s", "timestamp": 1, "value": 1e999}]}', 400, "not valid JSON"),
    (json.dumps({"events": [ev(timestamp="soon")]}).encode(), 400, "events[0].timestamp: expected ISO-8601"),
    (json.dumps({"events": [ev(timestamp=[1])]}).encode(), 400, "events[0].timestamp: expected ISO-8601 string or epoch seconds, got a list"),
    (json.dumps({"events": [ev()], "streams": {"s": {"probation": -1}}}).encode(), 400, "streams.s.probation: expected an integer >= 0"),
    (json.dumps({"events": [ev()], "streams": {"s": {"warmup": 3}}}).encode(), 400, "streams.s: expected an object with 'probation'"),
    (json.dumps({"events": [ev()], "streams": {"s": {"order": "any"}}}).encode(), 400, "streams.s.order: expected one of 'timestamp', 'arrival'"),
    (json.dumps({"events": [ev(timestamp="0001-01-01T00:00:00")]}).encode(), 400, "events[0].timestamp: expected a time from 1970-01-01"),
    (json.dumps({"events": [ev(), ev(timestamp=1e300)]}).encode(), 400, "events[1].timestamp: expected a time from 1970-01-01"),
    (json.dumps({"events": [ev(timestamp=-1e12)]}).encode(), 400, "events[0].timestamp: expected a time from 1970-01-01"),
    (b'{"events": [{"stream": "s", "timestamp": 1, "value": 1, "value": 2}]}', 400, "the key 'value' appears twice"),
    (b'{"events": [{"stream": "a", "stream": "b", "timestamp": 1, "value": 1}]}', 400, "the key 'stream' appears twice"),
    (b'{"events": [{"stream": "s", "timestamp": 1, "value": 1}], "events": [{"stream": "s", "timestamp": 1, "value": 1}]}',
     400, "the key 'events' appears twice"),
    (b'{"events": [{"stream": "s", "timestamp": 1, "value": 1}], "streams": {"s": 5, "s": {"probation": 1}}}',
     400, "the key 's' appears twice"),
    (b'{"events": [{"stream": "s", "timestamp": 1, "v\\u0061lue": 1, "value": 2}]}', 400, "the key 'value' appears twice"),
    (b'{"events": [{"stream": "s", "timestamp": "2026-01-01T00:00:00", "value": 1, "value": 2}]}', 400, "the key 'value' appears twice"),
]


@pytest.mark.parametrize("body,status,says", BAD_JSON, ids=[b[2] for b in BAD_JSON])
def test_every_bad_json_request_is_named(body: bytes, status: int, says: str) -> None:
    with pytest.raises(RequestError) as info:
        decode(body, JSON)
    assert info.value.status == status
    assert says in info.value.message, info.value.message
    assert "\n" not in info.value.message


def test_bad_packed_requests_oversize_bodies_and_content_types() -> None:
    good = {"streams": ["s"], "index": np.zeros(2, "<u4").tobytes(), "timestamp": np.zeros(2).tobytes(), "value": np.ones(2).tobytes()}
    cases = [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb([1]), "expected a msgpack map"),
        (msgpack.packb({k: v for k, v in good.items() if k != "value"}), "value: required field is missing"),
        (msgpack.packb({**good, "value": np.ones(3).tobytes()}), "expected one entry per event"),
        (msgpack.packb({**good, "value": b"\x00" * 7}), "value: expected binary float64"),
        (msgpack.packb({**good, "index": np.ones(2, "<u4").tobytes()}), "refers to stream 1, but only 1"),
        (msgpack.packb({**good, "value": np.array([1.0, np.inf]).tobytes()}), "events[1].value: expected a finite number"),
        (msgpack.packb({**good, "streams": [""]}), "expected a non-empty string"),
        (msgpack.packb({**good, "streams": ["s", "t"]}), "streams[1]: listed, but no event refers to it"),
        (msgpack.packb({**good, "streams": ["s", "s"], "index": np.array([0, 1], "<u4").tobytes()}), "listed twice"),
        (msgpack.packb({**good, "timestamp": np.array([1.0, -5.0]).tobytes()}), "events[1].timestamp: expected a time"),
        (b"\x85" + msgpack.packb("value") + msgpack.packb(np.ones(2).tobytes()) + msgpack.packb(good)[1:], "appears twice"),
    ]
    for body, says in cases:
        with pytest.raises(RequestError) as info:
            decode(body, PACKED)
        assert info.value.status == 400 and says in info.value.message, (says, info.value.message)
    assert len(decode(msgpack.packb(good), PACKED)) == 2
    with pytest.raises(RequestError) as info:
        decode(b" " * (MAX_BODY_BYTES + 1), JSON)
    assert info.value.status == 413
    with pytest.raises(RequestError) as info:
        decode(b"{}", "text/csv")
    assert info.value.status == 415


def test_keys_with_colons_in_their_strings_are_not_taken_for_duplicates() -> None:
    body = json.dumps({"events": [ev(stream="host:9100"), ev(stream="host:9100", timestamp=2.0)],
                       "streams": {"host:9100": {"probation": 3, "order": "arrival"}}}).encode()
    got = decode(body, JSON)
    assert got.streams == ["host:9100"] and got.settings == {"host:9100": {"probation": 3, "order": "arrival"}}


def test_concat_and_select_keep_every_event_in_order() -> None:
    a, b = batch(5, ("x", "y")), batch(4, ("y", "z"))
    both = EventBatch.concat([a, b])
    assert [both.streams[i] for i in both.index] == [a.streams[i] for i in a.index] + [b.streams[i] for i in b.index]
    np.testing.assert_array_equal(both.value, np.r_[a.value, b.value])
    part = both.select(np.array([1, 3, 6]))
    assert [part.streams[i] for i in part.index] == [both.streams[both.index[i]] for i in (1, 3, 6)]


def test_shards_are_stable_and_spread() -> None:
    owners = [shard_of(f"stream-{i}", 4) for i in range(400)]
    assert owners == [shard_of(f"stream-{i}", 4) for i in range(400)]
    assert set(owners) == {0, 1, 2, 3} and min(owners.count(k) for k in range(4)) > 60


@pytest.mark.parametrize("kind,params", [
    ("windowedGaussian", {"window": 50}),
    ("random", {"seed": 4}),
    ("autoencoder", {"window": 8, "hidden": 8, "bottleneck": 3, "epochs": 1}),
    ("lstm", {"window": 8, "hidden": 8, "epochs": 1}),
])
def test_a_table_of_interleaved_streams_equals_each_stream_record_by_record(kind: str, params: dict) -> None:
    """Events of three streams, interleaved and cut into requests of random sizes, score as each stream alone
    does record by record (the learned ones on ONNX Runtime fp32: equal, as tests/test_streaming.py measures)."""
    rng = np.random.default_rng(1)
    n, names = 900, ["s0", "s1", "s2"]
    values = {s: 5 * np.sin(np.arange(n) / (7 + k)) + rng.normal(0, 0.3, n) for k, s in enumerate(names)}
    backend = {"backend": "onnxruntime", "precision": "fp32"} if kind in ("autoencoder", "lstm") else None
    variant = Variant(type=kind, params=params, backend=backend)
    table = StreamTable(variant.detector_factory(), default_probation=100)
    order = rng.permutation(np.repeat(np.arange(3), n))  # which stream each arriving event belongs to
    cursor = {s: 0 for s in names}
    got = {s: [] for s in names}
    start = 0
    while start < len(order):
        size = int(rng.integers(1, 400))
        ids = [names[k] for k in order[start : start + size]]
        vals, stamps = [], []
        for s in ids:
            vals.append(values[s][cursor[s]])
            stamps.append(1.7e9 + 300.0 * cursor[s])  # each stream's time moves forward
            cursor[s] += 1
        req = EventBatch.of(ids, stamps, vals)
        table.check(req)
        scores = table.score(req).scores
        for s, x in zip([req.streams[i] for i in req.index], scores):
            got[s].append(x)
        start += size
    for s in names:
        alone = variant.detector_factory()()
        alone.start(Stream(s, 100))
        ref = StreamingDetector.score_many(alone, np.zeros(n, "datetime64[ns]"), values[s])
        np.testing.assert_allclose(got[s], ref, rtol=0, atol=1e-9, err_msg=s)
    assert table.status()["streams"] == 3 and table.status()["warming"] == 0 and table.status()["events"] == 3 * n


def at(stream: str | list[str], t, v=1.0, settings: dict | None = None) -> EventBatch:
    """Events of `stream` (one id, or one per event) at epoch seconds `t` (a number or a list)."""
    t = np.atleast_1d(np.asarray(t, np.float64))
    ids = [stream] * len(t) if isinstance(stream, str) else stream
    return EventBatch.of(ids, t, np.full(len(t), v), settings)


def gauss_table(**kw) -> StreamTable:
    return StreamTable(Variant(type="windowedGaussian").detector_factory(), **{"default_probation": 750, **kw})


def test_stream_settings_apply_to_first_events_only() -> None:
    table = gauss_table(probation_percent=0.15)
    first = EventBatch.of(["a", "b", "c"], np.full(3, 1e9), np.ones(3), {"a": {"probation": 2}, "b": {"length": 4000}})
    table.check(first)
    assert table.score(first).started == ["a", "b", "c"]
    assert (table.streams["a"].probation, table.streams["b"].probation, table.streams["c"].probation) == (2, 600, 750)
    assert table.status()["warming"] == 3
    assert table.warming(["a", "b"]) == {"a": 2, "b": 600}  # events each still needs before it scores
    again = at("a", 2e9, settings={"a": {"probation": 5}})
    with pytest.raises(RequestError) as info:
        table.check(again)
    assert info.value.status == 409 and "streams.a" in info.value.message
    table.check(at("a", 2e9, settings={"a": {"probation": 2}}))  # repeating the same settings is fine
    with pytest.raises(RequestError) as info:
        table.check(at("a", 2e9, settings={"a": {"order": "arrival"}}))
    assert info.value.status == 409
    pending: dict = {}
    table.check(at("d", 1e9, settings={"d": {"probation": 1}}), pending)
    with pytest.raises(RequestError):  # a second request in the same serve batch may not restart it either
        table.check(at("d", 2e9, settings={"d": {"probation": 9}}), pending)
    small = StreamTable(Variant(type="null").detector_factory(), 0, max_streams=2)
    with pytest.raises(RequestError) as info:
        small.check(EventBatch.of(["a", "b", "c"], np.full(3, 1e9), np.ones(3)))
    assert info.value.status == 429


def test_a_streams_events_must_move_forward_in_time_unless_it_takes_arrival_order() -> None:
    table = gauss_table()
    table.check(first := at("s", [100.0, 200.0]))
    table.score(first)
    with pytest.raises(RequestError) as info:  # across requests: 409, naming both times
        table.check(at("s", 150.0))
    assert info.value.status == 409 and "1970-01-01T00:03:20Z" in info.value.message and "order: arrival" in info.value.message
    table.check(at("s", [200.0, 200.0]))  # a repeated time is no step back (real series repeat timestamps)
    with pytest.raises(RequestError) as info:  # within one request: 400, naming the event
        table.check(at(["s", "t", "s"], [300.0, 5.0, 250.0]))
    assert info.value.status == 400 and info.value.message.startswith("events[2].timestamp: stream s")
    pending: dict = {}  # two requests of one serve batch: the second must follow the first
    table.check(at("s", 400.0), pending)
    with pytest.raises(RequestError) as info:
        table.check(at("s", 399.0), pending)
    assert info.value.status == 409
    table.check(late := at("u", [50.0, 10.0, 10.0], settings={"u": {"order": "arrival"}}))
    table.score(late)
    table.check(at("u", 1.0, settings={"u": {"order": "arrival"}}))  # arrival order: any time is taken
    assert table.streams["s"].last_t == 200.0  # refused requests changed nothing


def test_a_probation_over_the_limit_is_refused_naming_it() -> None:
    table = gauss_table(max_probation=1000)
    with pytest.raises(RequestError) as info:
        table.check(at("big", 1.0, settings={"big": {"probation": 9_000_000_000_000_000_000}}))
    assert info.value.status == 400 and "streams.big.probation" in info.value.message and "1000" in info.value.message
    table.check(at("ok", 1.0, settings={"ok": {"probation": 1000, "length": 10**12}}))
    assert not table.streams


def test_idle_streams_expire_and_start_again_warming() -> None:
    now = [0.0]
    table = gauss_table(default_probation=2, ttl_s=60.0, max_streams=2, clock=lambda: now[0])
    for t, names in ((1.0, ["a", "b"]), (2.0, ["a", "b"]), (3.0, ["a", "b"])):
        table.score(at(names, [t, t]))
    assert table.warming(["a", "b"]) == {}  # both have scored
    now[0] = 30.0
    table.score(at("a", 4.0))  # a is sent again; b stays idle
    with pytest.raises(RequestError):  # the table is full
        table.check(at("c", 1.0))
    now[0] = 61.0
    assert table.expire() == 1 and list(table.streams) == ["a"]  # b idled 61 s > 60 s; a only 31 s
    table.check(at("b", 10.0))
    scored = table.score(at("b", 10.0))
    assert scored.started == ["b"] and scored.scores.tolist() == [0.0]  # b starts again, in probation
    assert table.warming(["a", "b"]) == {"b": 2} and table.status()["expired"] == 1


@pytest.mark.parametrize("kind", ["autoencoder", "windowedGaussian"])
def test_training_runs_off_the_callers_thread_and_keeps_each_streams_order(kind: str) -> None:
    """With an executor, the requests that reach a learned stream's training (and its later events, queued behind
    them) are scored there while other streams are scored at once; the scores equal scoring inline."""
    from concurrent.futures import ThreadPoolExecutor

    params = {"window": 8, "hidden": 8, "bottleneck": 3, "epochs": 1} if kind == "autoencoder" else {}
    variant = Variant(type=kind, params=params)
    rng = np.random.default_rng(3)
    requests = [at(["x"] * 30 + ["y"], 1e9 + 300.0 * np.r_[np.arange(30) + 30 * r, r], 0.0) for r in range(4)]
    for r in requests:
        r.value = rng.normal(size=len(r))
    inline = StreamTable(variant.detector_factory(), default_probation=40)
    want = [inline.score(r).scores for r in requests]
    with ThreadPoolExecutor(1) as pool:
        gate = threading.Event()
        pool.submit(gate.wait)  # the executor is busy until the gate opens: jobs queue, deterministically
        table = StreamTable(variant.detector_factory(), default_probation=40, executor=pool)
        outs = [table.score(r) for r in requests]
        deferred = [bool(o.jobs) for o in outs]
        assert table.warming(["x"]) == ({"x": 0} if kind == "autoencoder" else {})  # busy: no events needed, not ready
        assert all(not np.isnan(o.scores[-1]) for o in outs)  # y's events were scored at once
        gate.set()
        for o in outs:
            for positions, job in o.jobs:
                o.scores[positions] = job.result()
    for got, expected in zip(outs, want):
        np.testing.assert_allclose(got.scores, expected, rtol=0, atol=1e-9)
    if kind == "autoencoder":  # request 1 reaches record 40 of x (training), 2 and 3 queue behind it; y never waits
        assert deferred == [False, True, True, True]
    else:
        assert deferred == [False] * 4


def test_one_request_may_not_cost_more_than_its_share() -> None:
    from harness.serving.api import check_size

    check_size(at(["a", "b"], [1.0, 2.0]), max_events=2, max_streams=2)
    with pytest.raises(RequestError) as info:
        check_size(at("a", [1.0, 2.0, 3.0]), max_events=2, max_streams=2)
    assert info.value.status == 413 and "max_events_per_request" in info.value.message
    with pytest.raises(RequestError) as info:
        check_size(at(["a", "b", "c"], [1.0, 2.0, 3.0]), max_events=10, max_streams=2)
    assert info.value.status == 413 and "max_streams_per_request" in info.value.message


def test_service_config_is_strict() -> None:
    with pytest.raises(ValueError):
        ServiceConfig.model_validate({"variant": {"type": "null"}, "serve": {"shards": 0}})
    with pytest.raises(ValueError):
        ServiceConfig.model_validate({"variant": {"type": "null"}, "serve": {"replicas": 2}})
    assert ServiceConfig.model_validate({"variant": {"type": "null"}}).serve.host == "127.0.0.1"
    assert callable(resolve_detector("null"))


def test_the_serve_config_file_deploys_a_valid_service() -> None:
    """serve/config.yaml (for `serve run` outside the harness) names the app builder and a valid ServiceConfig."""
    import yaml

    from conftest import REPO

    config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "harness.serving.app:build_app"
    assert config["http_options"]["host"] == "127.0.0.1"
    service = ServiceConfig.model_validate(app["args"])
    assert callable(service.variant.detector_factory())
