"""The load generator (harness.load) against a real aiohttp scoring server on 127.0.0.1, run in a background
thread with its own event loop, so the generator's loop and the server's are as separate as a client and a
service: rates, errors, shed requests, bad answers, drops, the coordinated-omission difference between open and
closed loops, merging, validity rules, the peak search, the warm-up, the API token, and `harness load`'s flags.
Every run is bounded and 0.3-3 s long.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import threading
import time
from itertools import takewhile

import numpy as np
import pytest
from aiohttp import web

from harness.serving.api import Answer, decode, encode_answer
from harness.load import (
    LoadOutcome,
    LoadSettings,
    LoadSummary,
    Recorder,
    ValidityRules,
    drive,
    find_peak,
    find_peak_async,
    judge,
    request_bodies,
    run_closed_loop,
    run_load,
    run_open_loop,
    synthetic_streams,
    warm_up,
    warm_up_url,
    WarmupError,
)
from harness.load.errors import BAD_RESPONSE, SendError, Shed
from harness.load.http_target import auth_headers
from harness.load.payload import START_TIME
from harness.load.response import check_response
from harness.load.schedule import constant, offsets, poisson
from harness.load.summary import LatencyMs

from conftest import harness, one_error_line

pytestmark = pytest.mark.timeout(60)  # in-process load against a local server: each run lasts a few seconds

SHORT = ValidityRules(min_duration_s=0.5, min_requests=50)  # rules sized for these short runs


class ScoringServer:
    """/v1/score answering one score per event, with knobs for misbehaving: a fixed delay, a 500 for every n-th
    request, one stall (the first request after `stall_after_s` from the first request freezes the service for
    `stall_s`, holding every request that arrives meanwhile until it ends, like a GC pause), shedding every n-th
    request (503, with Retry-After unless `retry_after=False`, answered after `shed_delay_s`), bad 200s (`bad`:
    "count" one score short, "nan" a NaN score, "text" a plain-text body), streams that warm (each listed in
    `warming` until it has been sent `warm_need` events), a stream whose requests fail (`fail_stream`: 503 without
    Retry-After) and an API token (`token`: 401 without `Authorization: Bearer <token>`)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.configure()

    def configure(self, delay_s: float = 0.0, fail_every: int = 0, stall_after_s: float | None = None,
                  stall_s: float = 1.0, shed_every: int = 0, retry_after: bool = True, shed_delay_s: float = 0.0,
                  bad: str | None = None, warm_need: int = 0, fail_stream: str | None = None,
                  token: str | None = None) -> "ScoringServer":
        self.delay_s, self.fail_every, self.stall_after_s, self.stall_s = delay_s, fail_every, stall_after_s, stall_s
        self.shed_every, self.retry_after, self.shed_delay_s, self.bad = shed_every, retry_after, shed_delay_s, bad
        self.warm_need, self.fail_stream, self.token = warm_need, fail_stream, token
        self.count = 0
        self.first = None
        self.stall_until = None
        self.in_flight = self.max_in_flight = 0
        self.seen: dict[str, int] = {}  # events received per stream
        self.batches: list = []  # every request decoded, in arrival order
        self.busy: set[str] = set()  # streams with a request being answered
        self.overlapped: set[str] = set()  # streams that had two requests in flight at once
        return self

    async def score(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = self.loop.time()
        self.count += 1
        n = self.count
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
                return web.json_response({"error": "missing or wrong API token"}, status=401)
            self.first = self.first if self.first is not None else now
            if self.stall_after_s is not None and self.stall_until is None and now - self.first >= self.stall_after_s:
                self.stall_until = now + self.stall_s
            if self.stall_until is not None and now < self.stall_until:
                await asyncio.sleep(self.stall_until - now)
            if self.shed_every and n % self.shed_every == 0:
                await asyncio.sleep(self.shed_delay_s)
                return web.json_response({"error": "overloaded"}, status=503,
                                         headers={"Retry-After": "1"} if self.retry_after else {})
            batch = decode(body, request.content_type)
            self.batches.append(batch)
            self.overlapped |= self.busy & set(batch.streams)
            self.busy |= set(batch.streams)
            try:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
            finally:
                self.busy -= set(batch.streams)
            if self.fail_every and n % self.fail_every == 0:
                return web.Response(status=500, text="injected failure")
            if self.fail_stream in batch.streams:
                return web.json_response({"error": "scoring failed (a shard died)"}, status=503)
            return self._answer(batch, request.content_type)
        finally:
            self.in_flight -= 1

    def _answer(self, batch, content_type: str) -> web.Response:
        warming = {}
        for k, s in enumerate(batch.streams):
            self.seen[s] = self.seen.get(s, 0) + int((batch.index == k).sum())
            if self.seen[s] < self.warm_need:
                warming[s] = self.warm_need - self.seen[s]
        scores = np.zeros(len(batch))
        if self.bad == "text":
            return web.Response(text="ok", content_type="text/plain")
        if self.bad == "count":
            scores = scores[:-1]
        if self.bad == "nan":
            scores[len(scores) // 2] = np.nan
        return web.Response(body=encode_answer(Answer(scores, warming), content_type), content_type=content_type)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/score", self.score)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def __enter__(self) -> "ScoringServer":
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def server():
    with ScoringServer() as s:
        yield s


@pytest.fixture(scope="module")
def bodies():
    return request_bodies(synthetic_streams(3, 200), events_per_request=10, encoding="msgpack")


# --- open loop ----------------------------------------------------------------------------------------------


def test_constant_open_loop_sends_its_schedule_and_is_valid(server, bodies):
    """The schedule, not the speed: 300 requests due in the measured 1.5 s at 200/s, 60 in the warm-up."""
    server.configure()
    settings = LoadSettings(rate=200, duration_s=1.5, warmup_s=0.3, events_per_request=10, rules=SHORT)
    s = drive(server.url, settings, bodies)
    assert s.mode == "open" and s.offered_rps == 200
    assert s.requests + s.errors + s.dropped == 300 and s.errors == 0, s.error_kinds
    assert s.duration_s >= 1.5 and s.achieved_rps <= 200  # never more than scheduled
    assert s.achieved_eps == pytest.approx(10 * s.achieved_rps)  # 10 events a request
    assert s.valid and s.reasons == []
    assert server.count == 360 - s.dropped  # warm-up requests were sent too, only not recorded
    assert s.latency_ms.p50 <= s.latency_ms.p99 <= s.latency_ms.max
    assert sum(sec.rps for sec in s.per_second) == s.requests and len(s.per_second) >= 2
    doc = LoadSummary.model_validate_json(s.to_json()).model_dump()
    assert {"achieved_rps", "achieved_eps", "latency_ms", "errors", "dropped", "valid"} <= set(doc)
    assert set(doc["latency_ms"]) >= {"p50", "p90", "p95", "p99", "max"}


def test_poisson_schedule_has_the_mean_rate_and_exponential_spread():
    rate = 1000.0
    t = np.fromiter((x for _, x in zip(range(20000), poisson(rate, seed=7))), float)
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert (gaps > 0).all()
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: coefficient of variation 1
    assert np.mean(gaps > 3 / rate) == pytest.approx(np.exp(-3), abs=0.01)  # its tail too, not just two moments
    again = np.fromiter((x for _, x in zip(range(20000), poisson(rate, seed=7))), float)
    assert np.array_equal(t, again)
    even = np.fromiter((x for _, x in zip(range(1000), constant(rate))), float)
    assert np.allclose(np.diff(even), 1 / rate) and even[0] == 0
    with pytest.raises(ValueError):
        next(offsets("bursty", rate))


def test_poisson_open_loop_achieves_its_scheduled_rate(server, bodies):
    server.configure()
    settings = LoadSettings(rate=300, arrivals="poisson", seed=3, duration_s=1.5, warmup_s=0.2, rules=SHORT,
                            events_per_request=10)
    s = drive(server.url, settings, bodies)
    scheduled = sum(1 for x in takewhile(lambda x: x < 1.7, poisson(300, seed=3)) if x >= 0.2)
    assert s.arrivals == "poisson" and s.requests + s.errors + s.dropped == scheduled
    assert s.scheduled_rps == pytest.approx(scheduled / 1.5)
    assert s.achieved_rps <= s.scheduled_rps
    assert s.valid, s.reasons


# --- closed loop --------------------------------------------------------------------------------------------


def test_closed_loop_keeps_n_clients_busy(server, bodies):
    server.configure(delay_s=0.01)
    settings = LoadSettings(concurrency=4, duration_s=1.0, warmup_s=0.2, events_per_request=10, rules=SHORT)
    s = drive(server.url, settings, bodies)
    assert s.mode == "closed" and s.concurrency == 4 and s.offered_rps is None
    assert server.max_in_flight == 4
    assert s.latency_ms.p50 >= 10.0
    # Little's law: N clients, each with one request at a time
    assert s.achieved_rps == pytest.approx(4 / (s.latency_ms.mean / 1e3), rel=0.15)
    assert s.errors == 0 and s.valid, s.reasons


def test_closed_loop_think_time_paces_each_client():
    async def send(i):
        await asyncio.sleep(0.005)

    outcome = asyncio.run(run_closed_loop(send, concurrency=2, duration_s=0.6, think_time_s=0.045))
    s = outcome.summary(SHORT)
    # one request per 5 ms + 45 ms per client: at most 40/s (think time is never skipped), and paced, not stopped
    assert 0.5 * 40 <= s.achieved_rps <= 40 * 1.05, s.achieved_rps


# --- failures -----------------------------------------------------------------------------------------------


def test_errors_are_counted_by_status_and_make_the_run_invalid(server, bodies):
    server.configure(fail_every=10)
    settings = LoadSettings(rate=200, duration_s=1.0, warmup_s=0.0, events_per_request=10, rules=SHORT)
    s = drive(server.url, settings, bodies)
    assert s.requests + s.errors + s.dropped == 200  # (drops only where the machine starves the generator)
    assert s.errors == server.count // 10 and s.error_kinds == {"500": s.errors}
    assert s.errors / (s.requests + s.errors) == pytest.approx(0.10, abs=0.01)
    assert not s.valid and any(r.startswith("max_error_rate") for r in s.reasons), s.reasons
    assert sum(sec.errors for sec in s.per_second) == s.errors


def test_connection_refused_is_a_connection_error():
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bodies = request_bodies({"a": np.arange(5.0)}, 1, encoding="json")
    s = drive(f"http://127.0.0.1:{port}", LoadSettings(rate=50, duration_s=0.5, warmup_s=0, rules=SHORT), bodies)
    assert s.requests == 0 and set(s.error_kinds) == {"connection"} and s.errors + s.dropped == 25
    assert not s.valid and s.latency_ms.p95 is None


def test_requests_over_max_in_flight_are_dropped(server, bodies):
    server.configure(delay_s=0.2)
    settings = LoadSettings(rate=100, duration_s=1.0, warmup_s=0.0, max_in_flight=5, events_per_request=10,
                            rules=SHORT)
    s = drive(server.url, settings, bodies)
    assert server.max_in_flight <= 5
    # 5 slots of 0.2 s serve ~25 of the 100 requests due; the rest are dropped, not queued
    assert 60 <= s.dropped <= 80, s.dropped
    assert s.requests + s.errors + s.dropped == 100
    assert not s.valid and any(r.startswith("max_error_rate") for r in s.reasons)


def test_a_generator_running_late_drops_instead_of_bursting():
    sent = []

    async def send(i):
        sent.append(i)
        if i == 50:
            time.sleep(0.3)  # blocks the generator's own event loop: 0.3 s of schedule at 200/s is 60 requests

    outcome = asyncio.run(run_open_loop(send, rate=200, duration_s=1.0, max_lateness_s=0.1))
    s = outcome.summary(SHORT)
    # those due more than 0.1 s before the loop woke up (about 40) are dropped; the ~20 less late are sent
    assert 30 <= s.dropped <= 50, s.dropped
    assert s.requests + s.dropped == 200 and len(sent) == s.requests
    assert 80 <= s.max_send_lag_ms <= 150  # the latest sent was just under the lateness bound
    # latency counts from the intended time: the blocked request itself, and those sent late, carry their lag
    assert s.latency_ms.max >= 290 and s.latency_ms.p95 >= 30, s.latency_ms


def test_outstanding_requests_after_the_drain_are_timeouts():
    async def send(i):
        await asyncio.sleep(600.0 if i >= 90 else 0.001)

    start = time.perf_counter()
    outcome = asyncio.run(run_open_loop(send, rate=100, duration_s=1.0, drain_s=0.3))
    s = outcome.summary(SHORT)
    assert time.perf_counter() - start < 60  # the run ended: the 10 stuck requests were not waited for
    assert s.requests == 90 and s.error_kinds == {"timeout": 10}

    async def stuck(i):
        await asyncio.sleep(5.0 if i >= 3 else 0.001)

    s = asyncio.run(run_closed_loop(stuck, concurrency=2, duration_s=0.3, drain_s=0.2)).summary(SHORT)
    assert s.requests == 3 and s.error_kinds == {"timeout": 2}


# --- coordinated omission -----------------------------------------------------------------------------------


def test_open_loop_shows_a_stall_that_a_closed_loop_hides(server, bodies):
    server.configure(stall_after_s=0.8, stall_s=1.0)
    open_ = drive(server.url, LoadSettings(rate=200, duration_s=2.5, warmup_s=0.0, events_per_request=10,
                                           rules=SHORT), bodies)
    server.configure(stall_after_s=0.8, stall_s=1.0)
    closed = drive(server.url, LoadSettings(concurrency=1, duration_s=2.5, warmup_s=0.0, events_per_request=10,
                                            rules=SHORT), bodies)
    # open loop: ~200 requests were due during the stall, each waiting up to 1 s past its intended time
    assert open_.latency_ms.p99 >= 500, open_.latency_ms
    assert open_.latency_ms.p95 >= 500, open_.latency_ms
    # closed loop: the one client waited once; everything else was fast, so only the max tells
    assert closed.latency_ms.max >= 900, closed.latency_ms
    assert closed.latency_ms.p99 < 100, closed.latency_ms
    assert closed.requests > 200  # enough samples for the single slow one to sit above p99
    assert open_.latency_ms.p99 > 10 * closed.latency_ms.p99


# --- recording, merging, validity, peak ----------------------------------------------------------------------


def test_merged_recorders_equal_one_recorder_of_all_samples():
    rng = np.random.default_rng(1)
    latency = rng.lognormal(np.log(0.01), 1.0, 4000)
    at = rng.uniform(0, 5, 4000)
    ok = rng.uniform(size=4000) > 0.05
    whole, a, b = Recorder(5.0), Recorder(5.0), Recorder(4.0)
    kinds = ["503", "shed", "timeout"]  # refused, shed (both answered), and no answer
    for k, (lat, t, good) in enumerate(zip(latency, at, ok)):
        kind = None if good else kinds[k % 3]
        for r in (whole, a if k % 2 else b):
            r.record(None if kind == "timeout" else lat, t, events=3, ok=bool(good), kind=kind)
            if k % 97 == 0:
                r.drop(t)
    shipped = Recorder.from_state(a.to_state()).merge(pickle.loads(pickle.dumps(b)))
    assert shipped.latency.encode() == whole.latency.encode()
    assert shipped.to_state() == whole.to_state()
    assert shipped.summary() == whole.summary()
    summary = whole.summary()
    p99_ms = summary["latency_ms"].p99
    assert p99_ms == pytest.approx(np.percentile(latency[ok], 99) * 1e3, rel=0.02)  # HDR 0.1% + interpolation
    failed = np.flatnonzero(~ok)
    shed, timeouts = failed[failed % 3 == 1], failed[failed % 3 == 2]
    assert summary["shed"] == len(shed) and summary["error_kinds"] == {"503": len(failed) - len(shed) - len(timeouts),
                                                                        "timeout": len(timeouts)}
    answered = np.ones(len(latency), bool)
    answered[timeouts] = False
    assert summary["answered"] == answered.sum()
    assert summary["answered_latency_ms"].p99 == pytest.approx(np.percentile(latency[answered], 99) * 1e3, rel=0.02)
    assert sum(sec.shed for sec in summary["per_second"]) == len(shed)


def test_merged_outcomes_add_rates_and_clients():
    def outcome(n):
        rec = Recorder(2.0)
        for k in range(n):
            rec.record(0.01, k / n * 2, events=10)
        return LoadOutcome("open", rec, arrivals="constant", offered_rps=n / 2, scheduled=n, events_per_request=10)

    merged = LoadOutcome.from_state(outcome(300).to_state()).merge(LoadOutcome.from_state(outcome(100).to_state()))
    s = merged.summary(SHORT)
    assert s.offered_rps == 200 and s.requests == 400 and s.achieved_rps == pytest.approx(200)
    assert s.valid, s.reasons
    with pytest.raises(ValueError):
        merged.merge(LoadOutcome("closed"))


def _summary(**figures) -> LoadSummary:
    base = dict(mode="open", arrivals="constant", offered_rps=100.0, scheduled_rps=100.0, events_per_request=1,
                duration_s=20.0, requests=2000, events=2000, achieved_rps=100.0, achieved_eps=100.0,
                latency_ms=LatencyMs(p50=1, p90=2, p95=3, p99=4, max=5, mean=1), errors=0, dropped=0)
    return LoadSummary(**{**base, **figures})


@pytest.mark.parametrize("figures, rule", [
    (dict(duration_s=5.0), "min_duration_s"),
    (dict(requests=50, events=50), "min_requests"),
    (dict(errors=30, requests=1970), "max_error_rate"),
    (dict(dropped=30), "max_error_rate"),
    (dict(shed=30, requests=1970), "max_error_rate"),  # shed requests were not served
    (dict(achieved_rps=90.0), "rate_tolerance"),
])
def test_each_validity_rule_gives_its_reason(figures, rule):
    rules = ValidityRules(min_duration_s=10, min_requests=100, max_error_rate=0.01, rate_tolerance=0.05)
    assert judge(_summary(), rules) == (True, [])
    valid, reasons = judge(_summary(**figures), rules)
    assert not valid and len(reasons) == 1 and reasons[0].startswith(rule + ":"), reasons


def test_validity_rate_rule_is_open_loop_only_and_reasons_accumulate():
    rules = ValidityRules(min_duration_s=10, min_requests=100)
    assert judge(_summary(mode="closed", offered_rps=None, scheduled_rps=None, achieved_rps=10.0), rules)[0]
    valid, reasons = judge(_summary(duration_s=1.0, requests=10, errors=10, achieved_rps=10.0), rules)
    assert not valid and [r.split(":")[0] for r in reasons] == [
        "min_duration_s", "min_requests", "max_error_rate", "rate_tolerance"]
    assert "10.0 req/s vs offered 100.0 req/s" in reasons[-1]
    assert not judge(_summary(), rules, offered_rps=120.0)[0]  # an explicit offered rate wins


def _fake_service(capacity: float):
    """A service that meets a 50 ms p95 SLO up to `capacity` req/s and collapses above it."""
    runs = []

    def measure(rate: float) -> LoadSummary:
        runs.append(rate)
        over = rate > capacity
        return _summary(offered_rps=rate, scheduled_rps=rate, achieved_rps=min(rate, capacity),
                        latency_ms=LatencyMs(p50=5, p90=8, p95=900 if over else 10, p99=1000, max=2000, mean=6),
                        valid=not over, reasons=["rate_tolerance: ..."] if over else [])

    return measure, runs


def test_find_peak_brackets_the_knee_within_the_precision():
    measure, runs = _fake_service(730.0)
    result = find_peak(measure, start_rps=50, slo_p95_ms=50, precision=0.05, max_runs=12)
    assert result.converged and 730 * 0.95 <= result.peak_rps <= 730
    assert result.summary.offered_rps == result.peak_rps
    assert runs[:5] == [50, 100, 200, 400, 800]  # doubling until the first failure, then bisection
    assert len(runs) <= 12 and [p.rps for p in result.probes] == runs
    failing = [p for p in result.probes if not p.passed]
    assert failing and all(p.rps > 730 and p.why for p in failing)


def test_a_rate_that_sheds_does_not_pass_the_peak_search():
    from harness.load.peak import passes

    assert passes(_summary(), slo_p95_ms=50, max_error_rate=0.01) == (True, "")
    ok, why = passes(_summary(requests=1900, shed=100), slo_p95_ms=50, max_error_rate=0.01)
    assert not ok and why.startswith("not served (errors + shed + dropped) 5.00%"), why


def test_find_peak_shrinks_when_the_start_fails_and_stops_at_max_runs():
    measure, runs = _fake_service(30.0)
    result = find_peak(measure, start_rps=200, slo_p95_ms=50, precision=0.01, max_runs=6)
    assert runs[:4] == [200, 100, 50, 25] and len(runs) == 6
    assert not result.converged and 25 <= result.peak_rps <= 30

    measure, _ = _fake_service(1e9)
    capped = find_peak(measure, start_rps=100, slo_p95_ms=50, max_rps=1000)
    assert capped.peak_rps == 1000 and not capped.converged

    async def ameasure(rate):
        return _fake_service(500.0)[0](rate)

    result = asyncio.run(find_peak_async(ameasure, start_rps=100, slo_p95_ms=50))
    assert result.converged and 475 <= result.peak_rps <= 500


# --- payload and settings -----------------------------------------------------------------------------------


def test_request_bodies_replay_each_stream_in_order():
    streams = {"a": np.arange(7.0), "b": 100 + np.arange(5.0), "c": 200 + np.arange(3.0)}
    bodies = request_bodies(streams, events_per_request=4, encoding="json", streams_per_request=2, step_s=60.0,
                            requests=9, settings={"a": {"probation": 2}})
    assert len(bodies) == 9 and bodies.events == [4] * 9
    seen: dict[str, list[tuple[float, float]]] = {}
    for body, content_type in bodies:
        batch = decode(body, content_type)
        assert len(batch) == 4 and len(batch.streams) == 2
        # every stream, in every request carrying it, with the same settings: in arrival order (the bodies wrap)
        assert batch.settings == {s: {"order": "arrival", **({"probation": 2} if s == "a" else {})}
                                  for s in batch.streams}
        for k, s in enumerate(batch.index):
            seen.setdefault(batch.streams[s], []).append((batch.timestamp[k], batch.value[k]))
    for name, values in streams.items():
        t, v = np.array(seen[name]).T
        assert np.allclose(np.diff(t), 60.0)  # in order, no gaps, time moving forward across wrap-arounds
        assert np.array_equal(v, values[np.arange(len(v)) % len(values)])
    assert len(seen["a"]) == len(seen["b"]) == len(seen["c"]) == 12  # 9 requests x 2 streams x 2 events / 3
    packed = request_bodies(streams, events_per_request=2, encoding="msgpack")
    assert len(packed) == 8 and all(ct == "application/msgpack" for _, ct in packed)  # one pass: 15 events / 2
    with pytest.raises(ValueError):
        request_bodies(streams, events_per_request=3, streams_per_request=2)


def test_settings_are_strict_and_pick_the_mode():
    assert LoadSettings(rate=10).mode == "open" and LoadSettings(concurrency=2).mode == "closed"
    for bad in (dict(), dict(rate=10, concurrency=2), dict(rate=10, burst=3), dict(mode="closed", rate=10),
                dict(rate=-1)):
        with pytest.raises(ValueError):
            LoadSettings(**bad)


def test_run_load_takes_any_async_send():
    calls = []

    async def send(i):  # e.g. a Ray Serve DeploymentHandle call
        calls.append(i)

    settings = LoadSettings(rate=100, duration_s=0.5, warmup_s=0.1, events_per_request=5, rules=SHORT)
    start = time.perf_counter()
    outcome = asyncio.run(run_load(settings, send, start_at=time.time() + 0.2))
    assert time.perf_counter() - start >= 0.2 + 0.6 - 0.01  # waited for start_at, then warm-up + window
    s = outcome.summary(settings.rules)
    assert s.requests + s.dropped == 50 and len(calls) >= 59 and calls == sorted(calls)  # 10 in the warm-up
    assert s.events == 5 * s.requests and s.per_second[0].rps == s.requests and s.valid, s.reasons


def test_request_bodies_continue_each_stream_from_its_first_event():
    streams = {"a": np.arange(7.0), "b": 100 + np.arange(5.0)}
    bodies = request_bodies(streams, events_per_request=3, encoding="msgpack", step_s=60.0, first={"a": 5, "b": 2})
    a, b = decode(*bodies[0]), decode(*bodies[1])
    assert a.streams == ["a"] and list(a.value) == [5.0, 6.0, 0.0]  # values wrap, time does not
    assert list(a.timestamp) == [START_TIME + 60.0 * p for p in (5, 6, 7)]
    assert b.streams == ["b"] and list(b.value) == [102.0, 103.0, 104.0]
    assert a.settings == {"a": {"order": "arrival"}}


# --- every answer checked; shed requests apart ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_check_response_accepts_one_finite_score_per_event_only(encoding):
    content_type = "application/msgpack" if encoding == "msgpack" else "application/json"
    good = encode_answer(Answer(np.arange(3.0), {"s": 2}), content_type)
    assert check_response(200, good, content_type, 3).warming == {"s": 2}
    for body, why in ((encode_answer(Answer(np.arange(2.0)), content_type), "2 scores for 3 events"),
                      (encode_answer(Answer(np.array([0.0, np.nan, 1.0])), content_type), "score 1 is nan"),
                      (encode_answer(Answer(np.array([0.0, np.inf, 1.0])), content_type),
                       "score 1 is nan" if encoding == "json" else "score 1 is inf"),  # JSON has no Infinity: null
                      (b"ok", "undecodable"), (b'{"scores": "abc"}', "undecodable"), (b"[1, 2, 3]", "undecodable")):
        with pytest.raises(SendError) as err:
            check_response(200, body, content_type, 3)
        assert err.value.kind == BAD_RESPONSE and err.value.answered and why in str(err.value), str(err.value)
    with pytest.raises(Shed):
        check_response(503, b'{"error": "overloaded"}', "application/json", 3, retry_after="1")
    with pytest.raises(SendError) as err:  # a 503 without Retry-After is a failure (a shard died), not shedding
        check_response(503, b'{"error": "scoring failed"}', "application/json", 3)
    assert err.value.kind == "503" and err.value.answered and not isinstance(err.value, Shed)


@pytest.mark.parametrize("bad, encoding", [("count", "msgpack"), ("nan", "msgpack"), ("nan", "json"), ("text", "json")])
def test_a_200_without_one_finite_score_per_event_is_a_bad_response(server, bad, encoding):
    server.configure(bad=bad)
    bodies = request_bodies(synthetic_streams(2, 100), events_per_request=10, encoding=encoding)
    s = drive(server.url, LoadSettings(rate=100, duration_s=0.3, warmup_s=0, events_per_request=10, rules=SHORT),
              bodies)
    assert s.requests == 0 and s.achieved_eps == 0 and s.latency_ms.p50 is None
    assert s.error_kinds == {BAD_RESPONSE: s.errors} and s.errors + s.dropped == 30 and s.errors > 0
    assert s.answered == s.errors  # the service did answer, badly
    assert not s.valid


def test_shed_requests_are_counted_apart_and_answered_latency_covers_them(server, bodies):
    server.configure(shed_every=4, shed_delay_s=0.05)
    settings = LoadSettings(rate=200, duration_s=1.0, warmup_s=0, events_per_request=10, rules=SHORT)
    s = drive(server.url, settings, bodies)
    assert s.shed == server.count // 4 and s.errors == 0 and s.error_kinds == {}, s.error_kinds
    assert s.requests + s.shed + s.dropped == 200
    assert s.answered == s.requests + s.shed and s.answered_rps == pytest.approx(s.answered / s.duration_s)
    assert s.achieved_eps == pytest.approx(10 * s.requests / s.duration_s)  # goodput: scored events only
    assert sum(sec.shed for sec in s.per_second) == s.shed and sum(sec.errors for sec in s.per_second) == 0
    # every shed answer took at least 50 ms; the scored ones did not wait
    assert s.answered_latency_ms.p99 >= 50 and s.answered_latency_ms.max >= 50
    assert s.latency_ms.p50 < 50
    # shedding 25% is not serving the offered load: it counts against validity (and the peak search) like errors
    assert s.error_rate == pytest.approx((s.shed + s.dropped) / 200)
    reason = next(r for r in s.reasons if r.startswith("max_error_rate"))
    assert f"{s.shed} shed" in reason and not s.valid
    doc = json.loads(s.to_json())
    assert doc["shed"] == s.shed and doc["answered_latency_ms"]["p99"] >= 50

    server.configure(shed_every=4, retry_after=False)  # no Retry-After: a real failure, not shedding
    s = drive(server.url, settings, bodies)
    assert s.shed == 0 and s.error_kinds == {"503": s.errors} and s.errors == server.count // 4


def test_closed_loop_counts_shed_requests_too(server, bodies):
    server.configure(shed_every=2)
    s = drive(server.url, LoadSettings(concurrency=2, duration_s=0.3, warmup_s=0, events_per_request=10,
                                       rules=SHORT), bodies)
    assert s.shed > 0 and s.errors == 0 and abs(s.shed - s.requests) <= 2
    assert s.answered == s.requests + s.shed


def test_a_timeout_is_no_answer():
    async def send(i):
        if i % 2:
            raise SendError("timeout", "no answer")
        raise SendError("500", "boom", answered=True)

    s = asyncio.run(run_open_loop(send, rate=100, duration_s=0.2)).summary(SHORT)
    assert s.error_kinds == {"timeout": 10, "500": 10} and s.answered == 10 and s.answered_latency_ms.p50 is not None


# --- warm-up ------------------------------------------------------------------------------------------------


def test_warm_up_sends_each_stream_in_order_until_it_has_scored(server):
    server.configure(warm_need=25, delay_s=0.005)
    streams = synthetic_streams(3, 200)
    warmed = warm_up_url(server.url, streams, 10, "msgpack", headers=None)
    # 25 events to warm: 10 (15 left), 20 (5 left), 30 (scored): three requests each, not a fourth
    assert warmed.events == {s: 30 for s in streams} and warmed.requests == 9 == server.count
    assert "3 streams scored after 90 events in 9 requests" in warmed.line()
    assert not server.overlapped  # one request at a time per stream
    for name, values in streams.items():
        mine = [b for b in server.batches if b.streams == [name]]
        assert len(mine) == 3 and all(b.settings == {name: {"order": "arrival"}} for b in mine)
        t = np.concatenate([b.timestamp for b in mine])
        v = np.concatenate([b.value for b in mine])
        assert np.array_equal(t, START_TIME + 300.0 * np.arange(30)) and np.array_equal(v, values[:30])
    # the measured bodies go on where the warm-up stopped
    body = decode(*request_bodies(streams, 10, "msgpack", first=warmed.events)[0])
    assert body.timestamp[0] == START_TIME + 300.0 * 30 and body.settings == {body.streams[0]: {"order": "arrival"}}

    server.configure(warm_need=0)  # a service that never lists a stream as warming: one request each
    assert warm_up_url(server.url, streams, 10).events == {s: 10 for s in streams}


def test_warm_up_takes_a_plain_post_and_passes_the_headers():
    calls = []

    def post(body, content_type, headers):
        batch = decode(body, content_type)
        calls.append((batch.streams[0], len(batch), dict(headers)))
        left = 12 - sum(n for s, n, _ in calls if s == batch.streams[0])
        warming = {batch.streams[0]: left} if left > 0 else {}
        return 200, encode_answer(Answer(np.zeros(len(batch)), warming), "application/json"), "application/json"

    warmed = warm_up(post, {"a": np.arange(9.0), "b": np.arange(3.0)}, 5, "json", {"a": {"length": 9}},
                     headers=auth_headers("t" * 20))
    assert warmed.events == {"a": 15, "b": 15} and [c[0] for c in calls] == ["a"] * 3 + ["b"] * 3
    assert all(h == {"Authorization": "Bearer " + "t" * 20} for *_, h in calls)


def test_a_shed_warm_up_request_is_sent_again_after_its_retry_after(server):
    streams = synthetic_streams(2, 200)
    server.configure(warm_need=25, shed_every=3)  # every 3rd request shed, Retry-After: 1
    started = time.monotonic()
    warmed = warm_up_url(server.url, streams, 10)
    assert warmed.events == {s: 30 for s in streams} and time.monotonic() - started >= 1.0  # it waited, then went on


def test_a_failed_warm_up_names_the_stream_and_why(server, monkeypatch):
    import harness.load.warmup

    streams = synthetic_streams(3, 200)
    server.configure(warm_need=25, fail_stream="synthetic-1")
    with pytest.raises(WarmupError, match=r"^warm-up of stream synthetic-1 failed: HTTP 503: .*a shard died"):
        warm_up_url(server.url, streams, 10)
    monkeypatch.setattr(harness.load.warmup, "SHED_PATIENCE_S", 0.5)
    server.configure(shed_every=1)  # shed for longer than the warm-up's patience: a failed warm-up
    with pytest.raises(WarmupError, match=r"failed: shed for 0.5 s: HTTP 503 \(shed, Retry-After\): \{\"error\": \"overloaded\"\}$"):
        warm_up_url(server.url, streams, 10)
    server.configure(bad="count")
    with pytest.raises(WarmupError, match=r"failed: bad_response: 9 scores for 10 events"):
        warm_up_url(server.url, streams, 10)
    server.configure(delay_s=1.0)
    with pytest.raises(WarmupError, match=r"failed: timeout: no answer within 0.2 s"):
        warm_up_url(server.url, streams, 10, timeout_s=0.2)

    def stuck(body, content_type, headers):  # a service whose count never goes down
        return 200, encode_answer(Answer(np.zeros(10), {"a": 5}), "application/json"), "application/json"

    with pytest.raises(WarmupError, match="still lists it as needing 5 events after 20"):
        warm_up(stuck, {"a": np.arange(3.0)}, 10, "json")


# --- the API token --------------------------------------------------------------------------------------------


def test_the_token_goes_with_every_request(server, bodies):
    token = "k" * 24
    server.configure(token=token)
    settings = LoadSettings(rate=100, duration_s=0.3, warmup_s=0, events_per_request=10, rules=SHORT)
    s = drive(server.url, settings, bodies)
    assert s.requests == 0 and set(s.error_kinds) == {"401"}
    s = drive(server.url, settings, bodies, headers=auth_headers(token))
    assert s.errors == 0 and s.requests + s.dropped == 30
    with pytest.raises(WarmupError, match="HTTP 401"):
        warm_up_url(server.url, synthetic_streams(1, 50), 10)
    assert warm_up_url(server.url, synthetic_streams(1, 50), 10, headers=auth_headers(token)).requests == 1


# --- harness load on the command line -------------------------------------------------------------------------


DEAD = "http://127.0.0.1:9"  # the flags are checked before anything is sent


@pytest.mark.parametrize("flag, value", [
    ("--rate", "0"), ("--rate", "-5"), ("--rate", "nan"), ("--concurrency", "0"), ("--duration", "0"),
    ("--warmup", "-1"), ("--timeout", "0"), ("--max-in-flight", "0"), ("--streams", "0"),
    ("--events-per-request", "0"), ("--slo-p95-ms", "0"), ("--min-duration", "-1"), ("--think-time", "-1"),
])
def test_each_bad_load_flag_is_one_line_naming_it(cli_env, flag, value):
    args = {"--events-per-request": "10", "--duration": "1", "--rate": "10"}
    if flag == "--concurrency":
        del args["--rate"]
    args[flag] = value
    line = one_error_line(harness(cli_env, "load", DEAD, *[x for kv in args.items() for x in kv]))
    assert line.startswith(f"harness: error: {flag}: expected ") and f"got {value}" in line, line


@pytest.mark.parametrize("content, why", [(None, "cannot read"), ("", "one line"), ("a b c d e f g h i j k\n", "one line"),
                                          ("folder", "is a folder"), ("short\n", "at least 16")])
def test_a_bad_token_file_is_one_line_naming_the_flag(cli_env, tmp_path, content, why):
    path = tmp_path / "token"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    line = one_error_line(harness(cli_env, "load", DEAD, "--events-per-request", "10", "--duration", "1",
                                  "--rate", "10", "--token-file", path))
    assert line.startswith("harness: error: --token-file: ") and why in line, line


def test_harness_load_warms_up_with_its_token_then_measures(cli_env, server, tmp_path):
    token = "s3cret-" + "x" * 20
    (tmp_path / "token").write_text(f"  {token}\n")
    server.configure(token=token, warm_need=25)
    proc = harness(cli_env, "load", server.url, "--events-per-request", "10", "--rate", "100", "--duration", "0.5",
                   "--warmup", "0", "--streams", "2", "--token-file", tmp_path / "token")
    assert proc.returncode in (0, 1) and proc.stderr == "", proc.stderr  # valid or not: 50 < 100 requests
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("warm-up: 2 streams scored after 60 events in 6 requests, "), proc.stdout
    assert "0 shed, 0 errors" in proc.stdout and "goodput " in proc.stdout and "every answer" in proc.stdout
    # the measured requests continue each stream after its warm-up, in arrival order
    first = next(b for b in server.batches[6:] if b.streams == ["synthetic-0"])
    assert first.timestamp[0] == START_TIME + 300.0 * 30 and first.settings["synthetic-0"]["order"] == "arrival"

    server.configure(token=token)
    proc = harness(cli_env, "load", server.url, "--events-per-request", "10", "--rate", "100", "--duration", "0.5",
                   "--warmup", "0", "--json")  # no --token-file: the warm-up fails, nothing is measured
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert re.match(r"harness: warm-up of stream synthetic-\d failed: HTTP 401: ", proc.stderr), proc.stderr
    assert server.count <= 8  # at most the first request of each stream (they warm side by side)

    server.configure()
    proc = harness(cli_env, "load", server.url, "--events-per-request", "10", "--rate", "100", "--duration", "0.3",
                   "--warmup", "0", "--json")
    doc = json.loads(proc.stdout)
    assert doc["warmup"]["streams"] == 8 and doc["warmup"]["requests"] == 8 and "shed" in doc and "answered_rps" in doc
