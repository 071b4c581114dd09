"""The scoring service tried as an attacker and as a busy production client would (issue 21), against a real
`harness serve` (a private Ray on 127.0.0.1, an API token): prints a line per case and the figures; asserts
nothing.

1. Abusive inputs and behaviours, each answered as docs/serving.md says, each followed by a normal request that
   must be scored (the service still serves).
2. Slow bodies: a normal client's p95 alone, then beside 200 connections that send a body a byte a second.
3. A 512 MB chunked body: its answer, and what the replica's and the proxy's memory grew by.
4. A 1-event client's p95 beside a client sending maximum-size requests (new streams for windowedGaussian; for
   the autoencoder, streams that each reach their training).
5. Overload: the peak at p95 <= 100 ms (JSON, 1,000 events a request), then 3x that rate for 10 s: p99 of all
   answers and the goodput against the peak.

    python benchmarks/bench_abuse.py [--port 8123] [--skip-overload] [--skip-learned]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.serving.api import EventBatch, encode  # noqa: E402

import served  # noqa: E402  (benchmarks/served.py)

TOKEN = "bench-abuse-token-" + "0123456789abcdef" * 2
GAUSS = ("scenarios/baselines.yaml", "windowedGaussian.window-288")
LEARNED = ("scenarios/serving.yaml", "autoencoder.onnxruntime-fp32")


# --- the service ------------------------------------------------------------------------------------------------

def serve(port: int, scenario: str, cell: str, token_file: Path, log: Path) -> subprocess.Popen:
    return served.start([scenario, "--cell", cell, "--port", str(port), "--token-file", str(token_file)], log, REPO)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proxy_pid() -> int | None:
    out = subprocess.run(["pgrep", "-f", "ray::ProxyActor"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else None


# --- talking to it ----------------------------------------------------------------------------------------------

class Wire:
    """Raw HTTP/1.1 on a socket (requests no client library sends), and well-formed requests."""

    def __init__(self, port: int):
        self.port = port
        self.auth = f"Authorization: Bearer {TOKEN}\r\n"
        self.k = 0  # a fresh stream name per normal request

    async def exchange(self, head: str, body: bytes = b"", chunked_mb: int = 0, trickle_s: float = 0.0,
                       timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        """Send `head` (the request line and headers, without the final blank line) and `body`, or a chunked body
        of `chunked_mb` MiB, or `body` one byte a second for `trickle_s`; read the answer meanwhile."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        answer = asyncio.create_task(read_answer(reader))
        writer.write(head.encode() + b"\r\n")
        try:
            if chunked_mb:
                for _ in range(chunked_mb):
                    if answer.done():
                        break
                    writer.write(b"100000\r\n" + b" " * (1 << 20) + b"\r\n")
                    await writer.drain()
                else:
                    writer.write(b"0\r\n\r\n")
            elif trickle_s:
                t_end = time.monotonic() + trickle_s
                while time.monotonic() < t_end and not answer.done():
                    writer.write(b" ")
                    await writer.drain()
                    await asyncio.sleep(1.0)
            else:
                writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass
        raw = await asyncio.wait_for(answer, timeout)
        writer.close()
        top, _, content = raw.partition(b"\r\n\r\n")
        lines = top.decode(errors="replace").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        return status, headers, content

    def post_head(self, length: int | None, content_type: str = "application/json", extra: str = "",
                  auth: bool = True, path: str = "/v1/score", method: str = "POST") -> str:
        cl = f"Content-Length: {length}\r\n" if length is not None else ""
        ct = f"Content-Type: {content_type}\r\n" if content_type else ""
        return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{ct}{cl}"
                f"{self.auth if auth else ''}{extra}")

    async def post(self, body: bytes, content_type: str = "application/json", **kw) -> tuple[int, dict, bytes]:
        return await self.exchange(self.post_head(len(body), content_type, **kw), body)

    async def normal(self) -> tuple[int, float]:
        """One well-formed request of a fresh stream: (status, seconds)."""
        self.k += 1
        body, kind = encode(EventBatch.of([f"normal-{self.k}"], [1.7e9], [1.0]), "json")
        t0 = time.perf_counter()
        status, _, _ = await self.post(body, kind)
        return status, time.perf_counter() - t0


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """An HTTP answer: its head, then as many bytes as its Content-Length says (not "until the connection
    closes": a server that refuses a body may reset the connection right after answering)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


def js(obj: object) -> bytes:
    return json.dumps(obj).encode()


def ev(**over) -> dict:
    return {"stream": "abuse", "timestamp": 1.7e9, "value": 1.0, **over}


def packed(**over) -> bytes:
    import msgpack

    doc = {"streams": ["p"], "index": np.zeros(2, "<u4").tobytes(), "timestamp": np.full(2, 1.7e9).tobytes(),
           "value": np.ones(2).tobytes(), **over}
    return msgpack.packb(doc)


Case = tuple[str, Callable[[Wire], Awaitable[tuple[int, dict, bytes]]], tuple[int, ...], str]


def cases() -> list[Case]:
    """(name, how to send it, the statuses docs/serving.md promises, a word its JSON error must hold)."""
    M = "application/msgpack"
    many = encode(EventBatch.of(["s"] * 10_001, 1.7e9 + np.arange(10_001.0), np.ones(10_001)), "json")[0]
    streams_1k = encode(EventBatch.of([f"k{i}" for i in range(1000)], np.full(1000, 1.7e9), np.ones(1000)), "json")[0]
    streams_30k = encode(EventBatch.of([f"n{i}" for i in range(30_000)], np.full(30_000, 1.7e9), np.ones(30_000)), "json")[0]
    return [
        ("malformed JSON", lambda w: w.post(b'{"events": ['), (400,), "JSON"),
        ("a body that is not an object", lambda w: w.post(b"[1, 2]"), (400,), "object"),
        ("a missing field", lambda w: w.post(js({"events": [{"stream": "s", "value": 1}]})), (400,), "timestamp"),
        ("an unknown field", lambda w: w.post(js({"events": [ev(x=1)]})), (400,), "unknown"),
        ("a value of the wrong type", lambda w: w.post(js({"events": [ev(value="high")]})), (400,), "value"),
        ("NaN", lambda w: w.post(b'{"events": [{"stream": "s", "timestamp": 1, "value": NaN}]}'), (400,), "NaN"),
        ("an infinite value", lambda w: w.post(b'{"events": [{"stream": "s", "timestamp": 1, "value": 1e999}]}'), (400,), "JSON"),
        ("no events", lambda w: w.post(js({"events": []})), (400,), "event"),
        ("an empty stream id", lambda w: w.post(js({"events": [ev(stream="")]})), (400,), "stream"),
        ("a 10,000-character stream id", lambda w: w.post(js({"events": [ev(stream="x" * 10_000)]})), (400,), "256"),
        ("invalid UTF-8", lambda w: w.post(b'{"events": [{"stream": "\xff\xfe", "timestamp": 1, "value": 1}]}'), (400,), "JSON"),
        ("100,000-deep nesting", lambda w: w.post(b"[" * 100_000 + b"]" * 100_000), (400,), "JSON"),
        ("a duplicate key", lambda w: w.post(b'{"events": [{"stream": "s", "timestamp": 1, "value": 1, "value": 2}]}'), (400,), "twice"),
        ("a duplicate key, escaped", lambda w: w.post(b'{"events": [{"stream": "s", "timestamp": 1, "v\\u0061lue": 1, "value": 2}]}'), (400,), "twice"),
        ("a duplicate top-level key", lambda w: w.post(js({"events": [ev()]})[:-1] + b', "events": []}'), (400,), "twice"),
        ("the year 1", lambda w: w.post(js({"events": [ev(timestamp="0001-01-01T00:00:00")]})), (400,), "1970"),
        ("timestamp 1e300", lambda w: w.post(js({"events": [ev(timestamp=1e300)]})), (400,), "1970"),
        ("timestamp -1e12", lambda w: w.post(js({"events": [ev(timestamp=-1e12)]})), (400,), "1970"),
        ("a timestamp that is not a time", lambda w: w.post(js({"events": [ev(timestamp="soon")]})), (400,), "ISO-8601"),
        ("a step back in time across requests", back_in_time, (409,), "earlier"),
        ("a step back in time within a request", lambda w: w.post(js({"events": [ev(stream="w", timestamp=2e9), ev(stream="w")]})), (400,), "back in time"),
        ("probation 9,000,000,000,000,000,000", lambda w: w.post(js({"events": [ev(stream="pr")], "streams": {"pr": {"probation": 9 * 10**18}}})), (400,), "max_probation"),
        ("new settings for a running stream", restart_settings, (409,), "first events"),
        ("an unknown order", lambda w: w.post(js({"events": [ev(stream="o")], "streams": {"o": {"order": "random"}}})), (400,), "order"),
        ("10,001 events in one request", lambda w: w.post(many), (413,), "max_events_per_request"),
        ("30,000 new streams in one request (1.4 MB)", lambda w: w.post(streams_30k), (413,), "_per_request"),
        ("1,000 new streams in one request", lambda w: w.post(streams_1k), (413,), "max_streams_per_request"),
        ("an unsupported Content-Type", lambda w: w.post(b"a,b", "text/csv"), (415,), "Content-Type"),
        ("msgpack garbage", lambda w: w.post(b"\xc1\xc1", M), (400,), "msgpack"),
        ("msgpack: a duplicate key", lambda w: w.post(b"\x85" + __import__("msgpack").packb("value") + __import__("msgpack").packb(np.ones(2).tobytes()) + packed()[1:], M), (400,), "twice"),
        ("msgpack: an index past the streams", lambda w: w.post(packed(index=np.full(2, 5, "<u4").tobytes()), M), (400,), "refers"),
        ("msgpack: columns of different lengths", lambda w: w.post(packed(value=np.ones(3).tobytes()), M), (400,), "one entry per event"),
        ("msgpack: a listed stream without events", lambda w: w.post(packed(streams=["p", "q"]), M), (400,), "no event"),
        ("msgpack: a column that is not binary", lambda w: w.post(packed(value=[1.0, 2.0]), M), (400,), "binary"),
        ("no API token", lambda w: w.post(js({"events": [ev()]}), auth=False), (401,), "token"),
        ("a wrong API token", lambda w: w.exchange(w.post_head(2, auth=False, extra="Authorization: Bearer wrong-token-wrong-token\r\n"), b"{}"), (401,), "token"),
        ("the token in the query string", lambda w: w.exchange(w.post_head(2, auth=False, path=f"/v1/score?token={TOKEN}"), b"{}"), (401,), "token"),
        ("GET /v1/score", lambda w: w.exchange(w.post_head(None, "", method="GET")), (405,), "POST"),
        ("an unknown path", lambda w: w.exchange(w.post_head(None, "", method="GET", path="/admin")), (404,), "route"),
        ("Content-Length: -1", lambda w: w.exchange(w.post_head(-1)), (400,), "HTTP"),
        ("Content-Length: abc", lambda w: w.exchange(w.post_head(None, extra="Content-Length: abc\r\n")), (400,), "HTTP"),
        ("two different Content-Lengths", lambda w: w.exchange(w.post_head(5, extra="Content-Length: 9\r\n"), b"12345"), (400,), "HTTP"),
        ("a 1 MB header", lambda w: w.exchange(w.post_head(2, extra=f"X-Big: {'a' * 1_000_000}\r\n"), b"{}"), (431,), "exceed"),
        ("a 1 MB URL", lambda w: w.exchange(w.post_head(2, path="/v1/score?" + "a" * 1_000_000), b"{}"), (431,), "exceed"),
        ("a declared 64 MiB body", lambda w: w.exchange(w.post_head(64 << 20)), (413,), "limit"),
        ("a chunked 40 MiB body", lambda w: w.exchange(w.post_head(None, extra="Transfer-Encoding: chunked\r\n"), chunked_mb=40), (413,), "limit"),
        ("Expect: 100-continue for 1 GiB", lambda w: w.exchange(w.post_head(1 << 30, extra="Expect: 100-continue\r\n")), (413,), "limit"),
        ("a body trickled a byte a second", lambda w: w.exchange(w.post_head(100), trickle_s=15, timeout=30), (408,), "arrive"),
    ]


async def back_in_time(w: Wire) -> tuple[int, dict, bytes]:
    await w.post(js({"events": [ev(stream="back", timestamp=2e9)]}))
    return await w.post(js({"events": [ev(stream="back", timestamp=1.9e9)]}))


async def restart_settings(w: Wire) -> tuple[int, dict, bytes]:
    await w.post(js({"events": [ev(stream="set")], "streams": {"set": {"probation": 5}}}))
    return await w.post(js({"events": [ev(stream="set", timestamp=1.8e9)], "streams": {"set": {"probation": 50}}}))


async def run_cases(port: int) -> int:
    w = Wire(port)
    passed = 0
    for name, send, statuses, says in cases():
        t0 = time.perf_counter()
        try:
            status, headers, body = await send(w)
            error = json.loads(body).get("error", "") if headers.get("content-type", "").startswith("application/json") else None
        except Exception as exc:  # noqa: BLE001 - a case that breaks the exchange itself is reported, not fatal
            status, headers, error = 0, {}, f"({type(exc).__name__}: {exc})"
        took = time.perf_counter() - t0
        after, after_s = await w.normal()
        ok = status in statuses and error is not None and says.lower() in error.lower() and after == 200
        passed += ok
        print(f"  {'ok  ' if ok else 'FAIL'} {status:3} {name:42} {took * 1e3:7.0f} ms | next request {after} in "
              f"{after_s * 1e3:.0f} ms | {str(error)[:90]}", flush=True)
    return passed


# --- slow bodies, a large chunked body, maximum-size requests -------------------------------------------------------

async def normal_p95(w: Wire, seconds: float, gap_s: float = 0.05) -> tuple[float, list]:
    lat, statuses = [], []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        status, took = await w.normal()
        statuses.append(status)
        lat.append(took)
        await asyncio.sleep(gap_s)
    return float(np.percentile(lat, 95) * 1e3), statuses


async def slow_bodies(port: int, connections: int = 200) -> None:
    w = Wire(port)
    alone, _ = await normal_p95(w, 5)
    stop = asyncio.Event()

    async def trickler() -> None:
        while not stop.is_set():  # refused after 10 s (408): it comes straight back
            try:
                await w.exchange(w.post_head(100_000), trickle_s=30, timeout=40)
            except Exception:  # noqa: BLE001
                await asyncio.sleep(0.5)

    tasks = [asyncio.create_task(trickler()) for _ in range(connections)]
    await asyncio.sleep(2)
    beside, statuses = await normal_p95(w, 15)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"  normal client p95 alone {alone:.1f} ms; beside {connections} trickling connections {beside:.1f} ms "
          f"({beside / alone:.2f}x; target <= 2x); its statuses {sorted(set(statuses))}, {len(statuses)} requests")


async def big_chunked(port: int, replica: int) -> None:
    w = Wire(port)
    proxy = proxy_pid()
    before = rss_mb(replica), (rss_mb(proxy) if proxy else float("nan"))
    t0 = time.perf_counter()
    status, _, body = await w.exchange(w.post_head(None, extra="Transfer-Encoding: chunked\r\n"), chunked_mb=512, timeout=120)
    took = time.perf_counter() - t0
    peak_after = rss_mb(replica), (rss_mb(proxy) if proxy else float("nan"))
    after, _ = await w.normal()
    print(f"  512 MiB chunked: {status} {body[:70]!r} in {took:.2f} s; replica RSS {before[0]:.0f} -> {peak_after[0]:.0f} MB "
          f"(+{peak_after[0] - before[0]:.0f}; target < 100), proxy RSS {before[1]:.0f} -> {peak_after[1]:.0f} MB; "
          f"next request {after}")


async def beside_max_size(port: int, big: Callable[[int], tuple[bytes, str]], label: str, seconds: float = 15) -> None:
    """A 1-event client's p95 alone, then while another client sends `big(k)` back to back."""
    w = Wire(port)
    alone, _ = await normal_p95(w, 5)
    stop, sent, big_lat, codes = asyncio.Event(), 0, [], set()

    async def heavy() -> None:
        nonlocal sent
        while not stop.is_set():
            body, kind = big(sent)
            t0 = time.perf_counter()
            status, _, _ = await w.post(body, kind)
            big_lat.append(time.perf_counter() - t0)
            codes.add(status)
            sent += 1

    task = asyncio.create_task(heavy())
    await asyncio.sleep(1)
    beside, statuses = await normal_p95(w, seconds)
    stop.set()
    await task
    print(f"  {label}: 1-event client p95 alone {alone:.1f} ms, beside {beside:.1f} ms (target <= 100); "
          f"{sent} maximum-size requests, median {np.median(big_lat) * 1e3:.0f} ms each, statuses {sorted(codes)}; "
          f"1-event statuses {sorted(set(statuses))}")


def gauss_max(k: int) -> tuple[bytes, str]:
    """10,000 events over as many streams new to the service as one request may touch (the most it may carry)."""
    from harness.serving.config import ServeSpec

    n = ServeSpec().max_streams_per_request
    ids = [f"max-{k}-{i % n}" for i in range(10_000)]
    return encode(EventBatch.of(ids, 1.7e9 + np.arange(10_000.0), np.random.default_rng(k).normal(size=10_000)), "msgpack")


def learned_max(k: int) -> tuple[bytes, str]:
    """10,000 events over 13 new streams of 769 events: each passes its probation (750) and trains."""
    ids = [f"train-{k}-{i // 769}" for i in range(10_000)]
    t = 1.7e9 + 300.0 * (np.arange(10_000) % 769)
    v = 50 + 10 * np.sin(np.arange(10_000) / 46.0) + np.random.default_rng(k).normal(size=10_000)
    return encode(EventBatch.of(ids, t, v), "msgpack")


# --- overload ---------------------------------------------------------------------------------------------------

def overload(port: int, token_file: Path) -> None:
    url = f"http://127.0.0.1:{port}"

    def load(*args: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "harness", "load", url, "--events-per-request", "1000", "--json",
                            "--token-file", str(token_file), *args], capture_output=True, text=True, cwd=REPO, timeout=900)
        if not r.stdout:
            raise SystemExit(r.stderr[-2000:])
        return json.loads(r.stdout)

    peak = load("--rate", "100", "--duration", "10", "--warmup", "2", "--find-peak", "--slo-p95-ms", "100")
    if peak["peak_rps"] is None:
        print(f"  no peak found: {peak['probes']}")
        return
    peak_eps = peak["summary"]["achieved_eps"]
    print(f"  peak at p95 <= 100 ms: {peak['peak_rps']:g} req/s = {peak_eps:,.0f} events/s "
          f"(probes {[p['rps'] for p in peak['probes']]})")
    s = load("--rate", str(3 * peak["peak_rps"]), "--duration", "10", "--warmup", "2", "--timeout", "10")
    every = s["answered_latency_ms"]
    print(f"  3x the peak ({3 * peak['peak_rps']:g} req/s offered) for 10 s: {s['answered']} answered, {s['requests']} "
          f"scored, {s['shed']} shed, {s['errors']} errors {s['error_kinds']}, {s['dropped']} dropped; all answers p99 "
          f"{every['p99']:.0f} ms, max {every['max']:.0f} ms (target p99 <= 1000); goodput {s['achieved_eps']:,.0f} "
          f"events/s = {s['achieved_eps'] / peak_eps:.0%} of the peak (target >= 80%)")


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--port", type=int, default=8123)
    a.add_argument("--skip-overload", action="store_true")
    a.add_argument("--skip-learned", action="store_true")
    a.add_argument("--only-max-size", action="store_true", help="only the maximum-size requests beside a 1-event client")
    args = a.parse_args()
    tmp = Path(tempfile.mkdtemp())
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    proc = serve(args.port, *GAUSS, token_file, tmp / "serve.log")
    try:
        status = json.loads(subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {TOKEN}",
                                            f"http://127.0.0.1:{args.port}/v1/status"], capture_output=True, text=True).stdout)
        replica = status["shards"][0]["pid"]
        if not args.only_max_size:
            print(f"Abusive inputs and behaviours ({GAUSS[1]}, harness serve, private Ray, API token):", flush=True)
            passed = asyncio.run(run_cases(args.port))
            print(f"  {passed} of {len(cases())} answered as documented, each followed by a scored request")
            print("Slow bodies:", flush=True)
            asyncio.run(slow_bodies(args.port))
            print("A 512 MiB chunked body:", flush=True)
            asyncio.run(big_chunked(args.port, replica))
        print("Maximum-size requests beside a 1-event client:", flush=True)
        asyncio.run(beside_max_size(args.port, gauss_max, GAUSS[1]))
        if not args.skip_overload and not args.only_max_size:
            print("Overload (1,000-event JSON):", flush=True)
            overload(args.port, token_file)
    finally:
        print(f"  harness serve stopped {served.stop(proc):.1f} s after Ctrl-C")
    if not args.skip_learned and not args.only_max_size:
        proc = serve(args.port, *LEARNED, token_file, tmp / "serve-learned.log")
        try:
            print("Maximum-size requests that train, beside a 1-event client:", flush=True)
            asyncio.run(beside_max_size(args.port, learned_max, LEARNED[1], seconds=20))
        finally:
            print(f"  harness serve stopped {served.stop(proc):.1f} s after Ctrl-C")


if __name__ == "__main__":
    main()
