"""A client of the scoring service, run inside the tests' network namespace (where the service listens on
127.0.0.1): replays corpus files through POST /v1/score, or sends the bad requests of docs/serving.md.

    python tests/serve_client.py replay URL CORPUS OUT.npz [--only a,b] [--events-per-request N] [--encoding E]
    python tests/serve_client.py bad URL
    python tests/serve_client.py until-ok URL     (after a fault: how long until a request succeeds again)
    python tests/serve_client.py raw URL          (a negative Content-Length; a chunked body past the limit)
    python tests/serve_client.py trickle URL      (slow-body clients, and a normal client meanwhile)
    python tests/serve_client.py burst URL        (many requests at once: shed answers)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp
import numpy as np

from harness.serving.api import EventBatch, decode_scores, encode


async def post(session: aiohttp.ClientSession, url: str, body: bytes, kind: str) -> tuple[int, bytes, str]:
    async with session.post(url, data=body, headers={"Content-Type": kind}) as r:
        return r.status, await r.read(), r.headers.get("Content-Type", "")


async def replay(url: str, corpus: str, out: str, only: list[str] | None, per_request: int, encoding: str, pairs: int) -> None:
    """Each file is a stream (named by its path), with the offline cell's probation and length. Files go in
    groups of two: a request carries the next chunk of both (two streams share it), and `pairs` groups are in
    flight at once."""
    from harness.corpus.layout import load_corpus

    files = load_corpus(corpus, only=only).files
    scores: dict[str, list[np.ndarray]] = {f.name: [] for f in files}

    async def group(members, session):
        cursor = {f.name: 0 for f in members}
        first = True
        while any(cursor[f.name] < f.n_rows for f in members):
            ids, stamps, vals = [], [], []
            for f in members:
                a = cursor[f.name]
                b = min(a + per_request // len(members), f.n_rows)
                ids += [f.name] * (b - a)
                stamps.append(f.timestamps[a:b].astype("datetime64[ns]").astype(np.int64) / 1e9)
                vals.append(f.values[a:b])
                cursor[f.name] = b
            settings = {f.name: _settings(f) for f in members} if first else {}
            first = False
            batch = EventBatch.of(ids, np.concatenate(stamps), np.concatenate(vals), settings)
            status, body, kind = await post(session, url, *encode(batch, encoding))
            if status != 200:
                raise SystemExit(f"HTTP {status}: {body[:300]!r}")
            got = decode_scores(body, kind)
            names = np.array([batch.streams[i] for i in batch.index])
            for f in members:
                scores[f.name].append(got[names == f.name])

    groups = [files[i : i + 2] for i in range(0, len(files), 2)]
    async with aiohttp.ClientSession() as session:
        for k in range(0, len(groups), pairs):
            await asyncio.gather(*(group(g, session) for g in groups[k : k + pairs]))
    np.savez(out, **{name.replace("/", "|"): np.concatenate(s) if s else np.zeros(0) for name, s in scores.items()})


def _settings(f) -> dict:
    """A replayed file's stream settings: its length, and arrival order for a file whose clock steps back (NAB's
    machine_temperature_system_failure.csv does, once: the service would refuse it in timestamp order)."""
    back = bool((np.diff(f.timestamps.astype("datetime64[ns]").astype(np.int64)) < 0).any())
    return {"length": f.n_rows, **({"order": "arrival"} if back else {})}


BAD = [
    ("malformed JSON", b'{"events": [', "application/json"),
    ("not an object", b"[1, 2, 3]", "application/json"),
    ("missing field", b'{"events": [{"stream": "s", "value": 1}]}', "application/json"),
    ("extra field", b'{"events": [{"stream": "s", "timestamp": 1, "value": 1, "x": 0}]}', "application/json"),
    ("wrong type", b'{"events": [{"stream": "s", "timestamp": 1, "value": "high"}]}', "application/json"),
    ("NaN", b'{"events": [{"stream": "s", "timestamp": 1, "value": NaN}]}', "application/json"),
    ("infinite", b'{"events": [{"stream": "s", "timestamp": 1, "value": 1e999}]}', "application/json"),
    ("empty list", b'{"events": []}', "application/json"),
    ("empty stream id", b'{"events": [{"stream": "", "timestamp": 1, "value": 1}]}', "application/json"),
    ("oversize", b" " * (33 * 1024 * 1024), "application/json"),
    ("unsupported type", b"a,b", "text/csv"),
    ("duplicate key", b'{"events": [{"stream": "s", "timestamp": 1, "value": 1, "value": 2}]}', "application/json"),
    ("year 1", b'{"events": [{"stream": "s", "timestamp": "0001-01-01T00:00:00", "value": 1}]}', "application/json"),
    ("too many events", encode(EventBatch.of(["s"] * 10_001, np.arange(10_001.0), np.ones(10_001)), "json")[0], "application/json"),
    ("too many streams", encode(EventBatch.of([f"s{i}" for i in range(257)], np.ones(257), np.ones(257)), "json")[0], "application/json"),
    ("probation over the limit", b'{"events": [{"stream": "p", "timestamp": 1, "value": 1}], "streams": {"p": {"probation": 9000000000000000000}}}', "application/json"),
    ("back in time", b'{"events": [{"stream": "ordered", "timestamp": 500, "value": 1}]}', "application/json"),
]
BEFORE = {"back in time": b'{"events": [{"stream": "ordered", "timestamp": 1000, "value": 1}]}'}  # sent first


async def bad(url: str) -> None:
    """Every bad request, each followed by a good one: [name, status, body, good status]."""
    good = encode(EventBatch.of(["ok"], [1.0], [1.0]), "json")
    out = []
    async with aiohttp.ClientSession() as session:
        for name, body, kind in BAD:
            if name in BEFORE:
                first, _, _ = await post(session, url, BEFORE[name], "application/json")
                assert first == 200, name
            status, text, _ = await post(session, url, body, kind)
            after, _, _ = await post(session, url, *good)
            out.append([name, status, text.decode(errors="replace"), after])
    print(json.dumps(out))


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """An HTTP answer: its head, then as many bytes as its Content-Length says (not "until the connection
    closes": a server that refuses a body may reset the connection right after answering)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


async def raw(url: str) -> None:
    """Requests no HTTP client library would send, over a bare socket: [name, status, content type, body]."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/json\r\n"

    async def exchange(request: bytes, stream_body: int = 0) -> tuple[int, str, str]:
        """Send `request` (then a chunked body of `stream_body` bytes, 1 MiB chunks), reading the answer meanwhile,
        as a careful client does: a server may answer, and close, before the body is sent."""
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        answer = asyncio.create_task(read_answer(reader))
        writer.write(request)
        try:
            for _ in range(stream_body // (1 << 20)):
                if answer.done():
                    break
                writer.write(b"100000\r\n" + b" " * (1 << 20) + b"\r\n")
                await writer.drain()
            else:
                if stream_body:
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
        except ConnectionError:
            pass  # refused half-way: the answer was read meanwhile
        answer = await asyncio.wait_for(answer, 30)
        writer.close()
        top, _, body = answer.partition(b"\r\n\r\n")
        lines = top.decode(errors="replace").split("\r\n")
        kind = next((ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("content-type:")), "")
        return int(lines[0].split()[1]), kind, body.decode(errors="replace")

    out = [["negative length", *await exchange((head + "Content-Length: -1\r\nConnection: close\r\n\r\n").encode())],
           ["chunked oversize", *await exchange((head + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode(),
                                                stream_body=40 << 20)]]
    print(json.dumps(out))


async def trickle(url: str, connections: int, seconds: float, token: str | None) -> None:
    """`connections` clients that declare a 100,000-byte body and send one byte a second; meanwhile a normal
    client sends a request every 0.1 s (all with `token`, if given). Prints the normal client's statuses and the
    slowest one's seconds."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    credentials = f"Authorization: Bearer {token}\r\n" if token else ""  # slow, not unauthorised: past the token check
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/json\r\n"
            f"{credentials}Content-Length: 100000\r\n\r\n").encode()
    stop = asyncio.Event()

    async def slow_client() -> None:
        try:
            _, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(head)
            while not stop.is_set():
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(1.0)
            writer.close()
        except ConnectionError:
            pass

    tricklers = [asyncio.create_task(slow_client()) for _ in range(connections)]
    await asyncio.sleep(1.5)  # all of them connected and trickling
    statuses, slowest = [], 0.0
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers=auth) as session:
        t_end = time.monotonic() + seconds
        k = 0
        while time.monotonic() < t_end:
            body = encode(EventBatch.of(["normal"], [1e9 + k], [1.0]), "json")
            t0 = time.monotonic()
            try:
                status, _, _ = await post(session, url, *body)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status = type(exc).__name__
            slowest = max(slowest, time.monotonic() - t0)
            statuses.append(status)
            k += 1
            await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tricklers, return_exceptions=True)
    print(json.dumps({"statuses": statuses, "slowest_s": slowest}))


async def burst(url: str, n: int, events: int) -> None:
    """One request (the service's answer tells the HTTP guard what to admit), then `n` requests of `events` events
    at once: each answer's status, Retry-After and body."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        first, _, _ = await post(session, url, *encode(EventBatch.of(["first"], [1.0], [1.0]), "json"))
        assert first == 200, first

        async def one(k: int) -> list:
            body, kind = encode(EventBatch.of([f"b{k}"] * events, np.arange(float(events)), np.ones(events)), "json")
            async with session.post(url, data=body, headers={"Content-Type": kind}) as r:
                return [r.status, r.headers.get("Retry-After"), (await r.read()).decode(errors="replace")]

        print(json.dumps(await asyncio.gather(*(one(k) for k in range(n)))))


async def until_ok(url: str, timeout_s: float) -> None:
    """Requests in a loop until one succeeds: seconds taken and the failures seen."""
    body = encode(EventBatch.of(["probe"], [1.0], [1.0]), "json")
    t0, failures = time.monotonic(), []
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - t0 < timeout_s:
            try:
                status, text, _ = await post(session, url, *body)
            except aiohttp.ClientError as exc:
                status, text = -1, str(exc).encode()
            if status == 200:
                print(json.dumps({"seconds": time.monotonic() - t0, "failures": failures}))
                return
            failures.append([status, text.decode(errors="replace")[:200]])
            await asyncio.sleep(0.2)
    raise SystemExit(f"no success within {timeout_s} s: {failures[-3:]}")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("replay")
    r.add_argument("url"), r.add_argument("corpus"), r.add_argument("out")
    r.add_argument("--only", type=lambda s: s.split(","))
    r.add_argument("--events-per-request", type=int, default=1000)
    r.add_argument("--encoding", default="json")
    r.add_argument("--pairs", type=int, default=4)
    b = sub.add_parser("bad")
    b.add_argument("url")
    u = sub.add_parser("until-ok")
    u.add_argument("url"), u.add_argument("--timeout", type=float, default=60)
    sub.add_parser("raw").add_argument("url")
    t = sub.add_parser("trickle")
    t.add_argument("url"), t.add_argument("--connections", type=int, default=40), t.add_argument("--seconds", type=float, default=4)
    t.add_argument("--token")
    bu = sub.add_parser("burst")
    bu.add_argument("url"), bu.add_argument("--n", type=int, default=40), bu.add_argument("--events", type=int, default=10)
    a = p.parse_args()
    if a.cmd == "replay":
        asyncio.run(replay(a.url, a.corpus, a.out, a.only, a.events_per_request, a.encoding, a.pairs))
    elif a.cmd == "bad":
        asyncio.run(bad(a.url))
    elif a.cmd == "raw":
        asyncio.run(raw(a.url))
    elif a.cmd == "trickle":
        asyncio.run(trickle(a.url, a.connections, a.seconds, a.token))
    elif a.cmd == "burst":
        asyncio.run(burst(a.url, a.n, a.events))
    else:
        asyncio.run(until_ok(a.url, a.timeout))


if __name__ == "__main__":
    sys.exit(main())
