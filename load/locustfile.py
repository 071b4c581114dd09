"""Locust against the scoring API (docs/serving.md), speaking it as `harness load` does (docs/load.md).

    HARNESS_EVENTS_PER_REQUEST=1000 HARNESS_ENCODING=json HARNESS_TOKEN_FILE=token.txt \
        locust -f load/locustfile.py --host http://127.0.0.1:8000 --headless -u 8 -r 8 -t 60s --csv out/locust

Each Locust user replays one stream of its own, its events in time order (a 5-minute step, a daily sine with
noise, as `harness load`'s synthetic streams), `HARNESS_EVENTS_PER_REQUEST` events a request, JSON or msgpack
(`HARNESS_ENCODING`), and waits for each answer before sending again (a closed loop, as `harness load
--concurrency N` with N users), plus `HARNESS_THINK_TIME_S`.

A user first warms its stream (requests named `warm-up`, sent in order until the answer no longer lists the
stream in `warming`), then goes on under the name `warm-up` until `HARNESS_WARMUP_S` seconds (default 5) after
the first stream warmed. Then the measured window opens: Locust's statistics are reset once, and requests are
named `score`, so Locust's summary (its `score` row) covers the window alone, as `harness load`'s does. With
`HARNESS_DURATION_S` the window closes that many seconds later (no new request; the run then stops, as `harness
load --duration`); without it, at Locust's `-t`. (With Locust's workers, each resets its own statistics, but the
master's requests/s still counts from the run's start: compare with one process.)

As `harness load`'s, a user's measured bodies are encoded once (one pass over its 4,032 values) and sent round
and round, so encoding costs the load nothing; its time then jumps back once a round, so every request starts
its stream with `"order": "arrival"`, as `harness load`'s do.

Every answer is checked as `harness load` checks it: a 200 counts only with exactly one finite score per event
sent; a 503 with Retry-After is a failure named `shed`; any other status is a failure named by it (401: no token
or a wrong one). The token is `HARNESS_TOKEN_FILE`'s one line, or `HARNESS_TOKEN`; it goes in `Authorization:
Bearer`. A bad variable is one line naming it and exit 2, before any load.

It needs only Locust (which brings msgpack); orjson is used when installed, for JSON as fast as `harness load`'s.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from array import array
from itertools import count
from typing import Any

import gevent
import msgpack
from locust import FastHttpUser, constant, task
from locust.exception import StopUser

try:
    import orjson

    dumps, loads = orjson.dumps, orjson.loads
except ImportError:  # the standard library's: slower, the same bytes on the wire to the service's parser
    dumps, loads = (lambda doc: json.dumps(doc).encode()), json.loads

START_TIME = 1704067200.0  # 2024-01-01T00:00:00Z, as harness.load.payload
STEP_S = 300.0
LENGTH = 4032  # values per stream: one round of its bodies
CONTENT_TYPES = {"json": "application/json", "msgpack": "application/msgpack"}
MAX_EVENTS = 10_000  # the service's default serve.max_events_per_request
MIN_TOKEN_CHARS = 16
ORDER = {"order": "arrival"}  # every request's stream settings: its time jumps back when its bodies come round
SHED_PATIENCE_S = 60.0  # a warm-up retries shed requests this long in all (harness.load.warmup)


def fail(variable: str, why: str) -> None:
    """One line naming the environment variable, exit 2 (before Locust starts anything)."""
    print(f"locustfile: {variable}: {why}", file=sys.stderr)
    raise SystemExit(2)


def _number(name: str, default: str, kind: type, low: float, high: float = math.inf) -> Any:
    raw = os.environ.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        fail(name, f"expected {'an integer' if kind is int else 'a number'} in [{low:g}, {high:g}], got {raw!r}")
    return value


def settings_from_env() -> dict[str, Any]:
    """The run's settings from the environment (each checked; see the module docstring)."""
    encoding = os.environ.get("HARNESS_ENCODING", "json")
    if encoding not in CONTENT_TYPES:
        fail("HARNESS_ENCODING", f"expected json or msgpack, got {encoding!r}")
    return {"events": _number("HARNESS_EVENTS_PER_REQUEST", "1000", int, 1, MAX_EVENTS), "encoding": encoding,
            "warmup_s": _number("HARNESS_WARMUP_S", "5", float, 0),
            "duration_s": _number("HARNESS_DURATION_S", "", float, 0.001) if "HARNESS_DURATION_S" in os.environ else math.inf, "think_s": _number("HARNESS_THINK_TIME_S", "0", float, 0),
            "timeout_s": _number("HARNESS_TIMEOUT_S", "10", float, 0.001), "token": token_from_env()}


def token_from_env() -> str | None:
    """`HARNESS_TOKEN_FILE`'s one line (as `harness load --token-file`), else `HARNESS_TOKEN`, else none."""
    path = os.environ.get("HARNESS_TOKEN_FILE")
    name, token = "HARNESS_TOKEN_FILE", None
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            fail(name, f"cannot read {path} ({getattr(exc, 'strerror', None) or exc})")
    elif "HARNESS_TOKEN" in os.environ:
        name, token = "HARNESS_TOKEN", os.environ["HARNESS_TOKEN"].strip()
    if token is not None and (any(c.isspace() for c in token) or len(token) < MIN_TOKEN_CHARS):
        fail(name, f"expected one line of at least {MIN_TOKEN_CHARS} characters without spaces")
    return token


def stream_values(seed: int) -> list[float]:
    """A stream's values: a daily sine at 5-minute steps with noise (harness.load.payload.synthetic_streams)."""
    rng = random.Random(seed)
    return [50 + 10 * math.sin(2 * math.pi * t / 288 + seed) + rng.gauss(0, 1) for t in range(LENGTH)]


def encode(stream: str, first: int, n: int, values: list[float], encoding: str) -> bytes:
    """A request carrying events first .. first + n - 1 of `stream`, with its settings (`ORDER`), in
    harness.serving.api.encode's format."""
    times = [START_TIME + p * STEP_S for p in range(first, first + n)]
    vals = [values[p % len(values)] for p in range(first, first + n)]
    if encoding == "json":
        return dumps({"events": [{"stream": stream, "timestamp": t, "value": v} for t, v in zip(times, vals)],
                      "streams": {stream: ORDER}})
    return msgpack.packb({"streams": [stream], "index": _le(array("I", bytes(4 * n))), "timestamp": _le(array("d", times)),
                          "value": _le(array("d", vals)), "settings": {stream: ORDER}})


def cycle(stream: str, first: int, n: int, values: list[float], encoding: str) -> list[bytes]:
    """The bodies a user sends over and over after its warm-up (`first`: the events that took): one pass over
    its values, encoded once, so that encoding costs the load nothing (as `harness load`'s bodies)."""
    return [encode(stream, first + k * n, n, values, encoding) for k in range(max(1, math.ceil(len(values) / n)))]


def _le(a: array) -> bytes:
    """Little-endian bytes, as the packed form wants, whatever this machine's order."""
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def check(status: int, body: bytes, retry_after: str | None, events: int, encoding: str) -> tuple[str | None, dict]:
    """(None, the answer's `warming`) for a 200 with exactly one finite score per event; else (why, {}), `why`
    named as `harness load` counts it: `shed`, the HTTP status, or `bad_response: ...`."""
    if status == 0:
        return "connection: no answer", {}
    if status != 200:
        return ("shed" if status == 503 and retry_after is not None else f"HTTP {status}"), {}
    try:
        doc = msgpack.unpackb(body) if encoding == "msgpack" else loads(body)
        raw = doc["scores"]
        if encoding == "msgpack":
            if not isinstance(raw, bytes) or len(raw) % 8:
                return "bad_response: scores are not float64 data", {}
            scores = array("d", raw)
            if sys.byteorder == "big":
                scores.byteswap()
        else:
            scores = [float(s) for s in raw]
        warming = dict(doc.get("warming") or {})
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the answer is unusable
        return f"bad_response: undecodable answer ({type(exc).__name__})", {}
    if len(scores) != events:
        return f"bad_response: {len(scores)} scores for {events} events", {}
    if not all(map(math.isfinite, scores)):
        return "bad_response: a score is not a finite number", {}
    return None, warming


SETTINGS = settings_from_env()
WINDOW: dict[str, Any] = {"from": None, "open": False, "users": 0}  # this process's measured window; its users
_users = count()
_run = f"{os.getpid():x}{random.getrandbits(24):06x}"  # stream ids unique across Locust's worker processes


class ScoringUser(FastHttpUser):
    """One stream, in order; warmed first; then scored requests back to back (closed loop)."""

    wait_time = constant(SETTINGS["think_s"])
    network_timeout = connection_timeout = SETTINGS["timeout_s"]

    def on_start(self) -> None:
        k = next(_users)
        self.stream, self.values, self.next, self.bodies = f"locust-{_run}-{k}", stream_values(k), 0, []
        self.headers = {"Content-Type": CONTENT_TYPES[SETTINGS["encoding"]]}
        if SETTINGS["token"]:
            self.headers["Authorization"] = f"Bearer {SETTINGS['token']}"
        self.warm_up()
        self.bodies = cycle(self.stream, self.next, SETTINGS["events"], self.values, SETTINGS["encoding"])
        if WINDOW["from"] is None:  # the first stream warmed: the measured window starts HARNESS_WARMUP_S later
            WINDOW["from"] = time.monotonic() + SETTINGS["warmup_s"]
        WINDOW["users"] += 1

    def warm_up(self) -> None:
        """Send the stream's events in order until it is no longer warming; a shed request is sent again after
        its Retry-After (for up to SHED_PATIENCE_S), any other failure stops this user, and Locust then exits 1."""
        patience = time.monotonic() + SHED_PATIENCE_S
        while True:
            why, warming, retry_after = self.post("warm-up")
            if why == "shed" and time.monotonic() < patience:
                self.next -= SETTINGS["events"]  # the same events again: the service took none of them
                gevent.sleep(min(float(retry_after or 1), 10.0))
            elif why:
                print(f"locustfile: warm-up of stream {self.stream} failed: {why}", file=sys.stderr)
                self.environment.process_exit_code = 1  # even if the window's statistics reset forgets the failure
                raise StopUser()
            elif self.stream not in warming:
                return

    @task
    def score(self) -> None:
        now = time.monotonic()
        if not WINDOW["open"] and now >= WINDOW["from"]:
            WINDOW["open"] = True
            self.environment.stats.reset_all()  # Locust's rates and percentiles then cover the window alone
        if now >= WINDOW["from"] + SETTINGS["duration_s"]:  # the window is over: no new request; the last user out
            WINDOW["users"] -= 1                             # ends the run, as -t would
            if WINDOW["users"] == 0:
                gevent.spawn(self.environment.runner.quit)
            raise StopUser()
        self.post("score" if WINDOW["open"] else "warm-up")

    def post(self, name: str) -> tuple[str | None, dict, str | None]:
        """Send the stream's next events: (why it failed or None, the answer's `warming`, its Retry-After)."""
        n, encoding = SETTINGS["events"], SETTINGS["encoding"]
        if self.bodies:
            body = self.bodies[self.next % len(self.bodies)]
        else:  # warming: the stream's next events, encoded now
            body = encode(self.stream, self.next, n, self.values, encoding)
        self.next += 1 if self.bodies else n
        with self.client.post("/v1/score", data=body, headers=self.headers, name=name, catch_response=True) as r:
            retry_after = r.headers.get("Retry-After") if r.headers else None
            why, warming = check(r.status_code, r.content or b"", retry_after, n, encoding)
            if why:
                r.failure(why)
            else:
                r.success()
            return why, warming, retry_after
