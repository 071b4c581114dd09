"""Load for the serving chaos tests, run inside the test cluster's network namespace (the service listens on its
127.0.0.1): harness.load's open loop (the same generator, recorder and per-second series as `harness load` and a
load cell) with a `send` that also keeps a ledger of every answer, so the test can account for each event.

    python tests/chaos/serving_load.py load URL --rate R --duration S [--kill-at S] [--then-rate R --then-duration S]
    python tests/chaos/serving_load.py slow URL --rate R --duration S --bodies N --heads N --start-at S

Each request carries `--events` events of one stream (round robin over `--streams`), every stream started with a
probation longer than the run, so every 200 answer says how many events the stream has taken (`warming`): the
ledger keeps, per answer, the stream, its status and that count (`seen`), and whether the answer started the
stream; a request with no answer is kept too, its status the kind of failure (`timeout`, `connection`).
`--kill-at`: SIGKILL the replica that `GET /v1/status` names, that many seconds into the measured window (the load
task's `kill_replica_at_s`, from inside the namespace). `slow`: besides the load, `--bodies` clients
send a body a byte a second and `--heads` clients send their request head a byte a second, from `--start-at` (the
bodies spread over `--spread` seconds); each records what ended it (the status the service answered, or the
connection closing) and when.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from typing import Any
from urllib.parse import urlsplit

PROBATION = 10_000  # the serve default's max_probation: longer than any run here, so every answer carries `warming`


def bodies(streams: int, events: int, requests: int) -> tuple[list, list[str]]:
    """`requests` JSON bodies of `events` events of one stream each (round robin), and each body's stream."""
    import numpy as np

    from harness.load.payload import request_bodies

    names = [f"chaos-{k}" for k in range(streams)]
    values = {n: np.sin(np.arange(4096) / 50 + k) for k, n in enumerate(names)}
    out = request_bodies(values, events, "json", requests=requests, settings={n: {"probation": PROBATION} for n in names})
    return out, [names[i % streams] for i in range(requests)]


async def run(url: str, rate: float, duration: float, warmup: float, streams: int, events: int,
              kill_at: float | None = None, later: list[tuple[float, float]] = (), extra=None) -> dict[str, Any]:
    """The open loop at `rate` (then each (rate, duration) of `later`, continuing the streams), its ledger, the
    kill, and `extra(loop, window_start)`'s result (an awaitable started with the load)."""
    from harness.load import LoadSettings, run_load
    from harness.load.errors import SendError
    from harness.load.http_target import HttpTarget
    from harness.load.response import check_response

    phases = [(rate, duration), *later]
    warmups = [warmup] + [0.0] * len(later)  # a later phase is measured from its first request: the change itself
    total = sum(int(r * (d + w)) + 1 for (r, d), w in zip(phases, warmups))
    payload, owner = bodies(streams, events, total)
    ledger: list[list] = []
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"phases": []}
    async with HttpTarget(url, payload, 10.0, connections=256) as target:
        before = await _status(url)
        out["status_before"] = before
        offset = 0
        for k, (r, d) in enumerate(phases):
            warmup = warmups[k]
            start = loop.time() + warmup  # the measured window's start (run_open_loop's t0 + warmup, to the ms)
            base = offset

            async def send(i: int, base: int = base, start: float = start) -> None:
                j = base + i
                try:
                    answer = await target.exchange(*payload[j])
                except SendError as exc:  # no answer: its status is the kind (a timeout may have been scored)
                    ledger.append([j, owner[j], exc.kind, None, False, round(loop.time() - start, 4), payload.events[j]])
                    raise
                row = [j, owner[j], answer.status, None, False, round(loop.time() - start, 4), payload.events[j]]
                ledger.append(row)
                scored = check_response(answer.status, answer.body, answer.content_type, payload.events[j], answer.retry_after)
                row[3] = PROBATION + 1 - scored.warming[owner[j]] if owner[j] in scored.warming else None
                row[4] = owner[j] in scored.started

            if k == 0 and kill_at is not None:
                pid = before["shards"][0]["pid"]
                out["kill"] = {"pid": pid, "at_s": kill_at}
                loop.call_at(start + kill_at, lambda: out["kill"].update(killed_at=round(loop.time() - start, 4),
                                                                         killed_epoch=time.time()) or os.kill(pid, signal.SIGKILL))
            side = asyncio.ensure_future(extra(loop, start)) if (k == 0 and extra is not None) else None
            settings = LoadSettings(mode="open", rate=r, duration_s=d, warmup_s=warmup, max_in_flight=256, timeout_s=10.0)
            outcome = await run_load(settings, send)
            out["phases"].append(json.loads(outcome.summary().to_json()))
            if side is not None:
                out["side"] = await side
            offset += int(r * (d + warmup)) + 1
    out["ledger"] = ledger
    out["status_after"] = await _status(url)
    return out


async def _status(url: str) -> dict:
    import aiohttp

    parts = urlsplit(url)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        async with s.get(f"{parts.scheme}://{parts.netloc}/v1/status") as r:
            return await r.json()


async def trickle(url: str, head: bool, stop_at: float, loop: asyncio.AbstractEventLoop, start: float) -> list:
    """One slow client: a body (or, `head`, the request head itself) a byte a second until the service answers or
    closes, or `stop_at` (window seconds). Returns [what ended it, window seconds it started, seconds it lasted]."""
    parts = urlsplit(url)
    began = loop.time()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    line = f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/json\r\n"
    if head:
        writer.write(line.encode())
        drip = b"X-Slow: " + b"a" * 10_000  # a header that never ends, a byte at a time
    else:
        writer.write((line + "Content-Length: 100000\r\n\r\n").encode())
        drip = b" " * 100_000
    ended = "still open"
    try:
        for k in range(len(drip)):
            if loop.time() - start >= stop_at:
                break
            writer.write(drip[k : k + 1])
            await writer.drain()
            try:
                first = await asyncio.wait_for(reader.readline(), 1.0)
            except asyncio.TimeoutError:
                continue
            ended = first.decode(errors="replace").split(" ")[1] if first.startswith(b"HTTP/") else "closed"
            break
    except (ConnectionError, OSError):
        ended = "closed"
    finally:
        writer.close()
    return [ended, round(began - start, 3), round(loop.time() - began, 3)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["load", "slow"])
    p.add_argument("url")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--events", type=int, default=5)
    p.add_argument("--kill-at", type=float)
    p.add_argument("--then-rate", type=float)
    p.add_argument("--then-duration", type=float)
    p.add_argument("--bodies", type=int, default=0)
    p.add_argument("--heads", type=int, default=0)
    p.add_argument("--start-at", type=float, default=1.0)
    p.add_argument("--spread", type=float, default=0.0)
    a = p.parse_args()
    later = [(a.then_rate, a.then_duration)] if a.then_rate else []
    extra = None
    if a.mode == "slow":
        async def extra(loop, start):
            await asyncio.sleep(max(0.0, start + a.start_at - loop.time()))
            async def one(k: int) -> list:
                if k >= a.heads:  # bodies start evenly over --spread seconds, heads at once
                    await asyncio.sleep(a.spread * (k - a.heads) / max(1, a.bodies))
                return await trickle(a.url, k < a.heads, a.duration, loop, start)

            clients = [one(k) for k in range(a.bodies + a.heads)]
            got = await asyncio.gather(*clients, return_exceptions=True)
            return [g if isinstance(g, list) else [f"failed: {g!r}", None, None] for g in got]
    print(json.dumps(asyncio.run(run(a.url, a.rate, a.duration, a.warmup, a.streams, a.events, a.kill_at, later, extra))))


if __name__ == "__main__":
    main()
