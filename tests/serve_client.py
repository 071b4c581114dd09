"""A client of the scoring service, run inside the tests' network namespace (where the service listens on
127.0.0.1): replays corpus files through POST /v1/score, or sends the bad requests of docs/serving.md.

    python tests/serve_client.py replay URL CORPUS OUT.npz [--only a,b] [--events-per-request N] [--encoding E]
    python tests/serve_client.py bad URL
    python tests/serve_client.py until-ok URL     (after a fault: how long until a request succeeds again)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp
import numpy as np

from harness.api import EventBatch, decode_scores, encode


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
]


async def bad(url: str) -> None:
    """Every bad request, each followed by a good one: [name, status, body, good status]."""
    good = encode(EventBatch.of(["ok"], [1.0], [1.0]), "json")
    out = []
    async with aiohttp.ClientSession() as session:
        for name, body, kind in BAD:
            status, text, _ = await post(session, url, body, kind)
            after, _, _ = await post(session, url, *good)
            out.append([name, status, text.decode(errors="replace"), after])
    print(json.dumps(out))


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
    a = p.parse_args()
    if a.cmd == "replay":
        asyncio.run(replay(a.url, a.corpus, a.out, a.only, a.events_per_request, a.encoding, a.pairs))
    elif a.cmd == "bad":
        asyncio.run(bad(a.url))
    else:
        asyncio.run(until_ok(a.url, a.timeout))


if __name__ == "__main__":
    sys.exit(main())
