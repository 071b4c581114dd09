"""The Ray Serve application that scores live streams with one variant (detector x backend x precision).

    POST /v1/score   a batch of events (JSON or packed msgpack, harness.api) -> one score per event, in order
    GET  /v1/status  every shard's streams, warming streams, events scored and start time (a restart shows)

Two deployments (harness.serving explains why): `ScoreIngress`, stateless, decodes and checks a request, splits
its events by shard and reassembles the scores; `StreamShard-<k>`, one replica each, holds its streams' state
(harness.streams.StreamTable) and scores the events of up to `max_batch_size` requests together (@serve.batch).

Outside the harness: `serve run serve/config.yaml` (from the repository root), or
`serve run serve.app:build_app config=<a ServiceConfig as JSON>`.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from harness.api import JSON, MAX_BODY_BYTES, EventBatch, RequestError, decode, encode_scores
from harness.serving import ServiceConfig, make_detector_factory, shard_of
from harness.streams import StreamTable


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return status, json.dumps({"error": message}).encode(), JSON


class Streams:
    """The state of the streams of one shard, and their scoring, `max_batch_size` requests at a time."""

    def __init__(self, cfg: ServiceConfig, shard: int):
        self.shard = shard
        self.table = StreamTable(make_detector_factory(cfg.variant), cfg.serve.probation, cfg.probation_percent, cfg.serve.max_streams)
        self.score.set_max_batch_size(cfg.serve.max_batch_size)
        self.score.set_batch_wait_timeout_s(cfg.serve.batch_wait_timeout_s)

    @serve.batch
    async def score(self, batches: list[EventBatch]) -> list[np.ndarray | RequestError]:
        """Scores for each request's events: the accepted requests are scored together (a stream's events in
        arrival order); a refused one gets its RequestError, without touching any state."""
        results: list[np.ndarray | RequestError | None] = [None] * len(batches)
        accepted, pending = [], {}
        for i, b in enumerate(batches):
            try:
                self.table.check(b, pending)
                accepted.append(i)
            except RequestError as exc:
                results[i] = exc
        if accepted:
            scores = self.table.score(EventBatch.concat([batches[i] for i in accepted]))
            start = 0
            for i in accepted:
                results[i] = scores[start : start + len(batches[i])]
                start += len(batches[i])
        return results

    def status(self) -> dict:
        return {"shard": self.shard, "pid": os.getpid(), **self.table.status()}


@serve.deployment
class StreamShard(Streams):
    """One shard of a sharded service: the streams that hash to it."""

    def __init__(self, config: dict[str, Any], shard: int):
        super().__init__(ServiceConfig.model_validate(config), shard)


@serve.deployment
class ScoreIngress:
    """HTTP in, scores out; also `handle_body` for callers inside the cluster (the same work without the proxy).
    Without shard handles (one shard, one ingress replica) it holds the streams itself: one hop less."""

    def __init__(self, config: dict[str, Any], *shards: DeploymentHandle):
        self.config = ServiceConfig.model_validate(config)
        self.shards = shards
        self.local = None if shards else Streams(self.config, 0)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if path.endswith("/v1/status") and request.method == "GET":
            return Response(json.dumps(await self.status()), media_type=JSON)
        if not path.endswith("/v1/score"):
            status, body, kind = _error(404, f"no route {request.method} {request.url.path} (POST /v1/score, GET /v1/status)")
        elif request.method != "POST":
            status, body, kind = _error(405, "use POST for /v1/score")
        elif int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            status, body, kind = _error(413, f"body exceeds the limit of {MAX_BODY_BYTES} bytes")
        else:
            status, body, kind = await self.handle_body(await request.body(), request.headers.get("content-type"))
        return Response(body, status_code=status, media_type=kind)

    async def handle_body(self, body: bytes, content_type: str | None) -> tuple[int, bytes, str]:
        """(status, body, content type) of the answer to one request body."""
        try:
            batch = decode(body, content_type)
            scores = await self._score(batch)
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except Exception as exc:  # noqa: BLE001 - a shard that died or failed: the whole request fails, loudly
            first = str(exc).splitlines()[0] if str(exc) else ""
            return _error(503, f"scoring failed ({type(exc).__name__}: {first}); no scores are returned, though with "
                               "several shards those that answered have scored their events")
        kind = (content_type or JSON).split(";")[0].strip().lower()
        return 200, encode_scores(scores, kind), kind

    async def _score(self, batch: EventBatch) -> np.ndarray:
        if self.local is not None:
            return _raise_refused(await self.local.score(batch))
        n = len(self.shards)
        if n == 1:
            return _raise_refused(await self.shards[0].score.remote(batch))
        owner = np.array([shard_of(s, n) for s in batch.streams])[batch.index]
        parts = [(k, np.flatnonzero(owner == k)) for k in range(n)]
        parts = [(k, pos) for k, pos in parts if len(pos)]
        answers = await asyncio.gather(*(self.shards[k].score.remote(batch.select(pos)) for k, pos in parts))
        out = np.empty(len(batch))
        for (_, pos), scores in zip(parts, answers):
            out[pos] = _raise_refused(scores)
        return out

    async def status(self) -> dict:
        if self.local is not None:
            return {"variant": self.config.variant.id, "shards": [self.local.status()]}
        shards = await asyncio.gather(*(s.status.remote() for s in self.shards))
        return {"variant": self.config.variant.id, "shards": list(shards)}


def _raise_refused(answer: np.ndarray | RequestError) -> np.ndarray:
    if isinstance(answer, RequestError):
        raise answer
    return answer


def build_app(args: dict[str, Any]):
    """The application for a ServiceConfig (a dict, or `config=<JSON>` from `serve run ... config=...`)."""
    if "config" in args and isinstance(args["config"], str):
        args = json.loads(args["config"])
    cfg = ServiceConfig.model_validate(args)
    s = cfg.serve
    config = cfg.model_dump(mode="json")
    common = {"max_ongoing_requests": s.max_ongoing_requests}
    placed = {"label_selector": dict(cfg.labels)} if cfg.labels else {}  # the target's nodes only
    if s.single:
        return ScoreIngress.options(num_replicas=1, ray_actor_options={"num_cpus": s.cpus_per_shard, **placed}, **common).bind(config)
    shards = [
        StreamShard.options(name=f"StreamShard-{k}", num_replicas=1, ray_actor_options={"num_cpus": s.cpus_per_shard, **placed},
                            **common).bind(config, k)
        for k in range(s.shards)
    ]
    return ScoreIngress.options(
        num_replicas=s.ingress_replicas, ray_actor_options={"num_cpus": s.cpus_per_ingress, **placed}, **common
    ).bind(config, *shards)
