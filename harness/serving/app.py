"""The Ray Serve application that scores live streams with one variant (detector x backend x precision).

    POST /v1/score   a batch of events (JSON or packed msgpack, harness.api) -> one score per event, in order,
                     and which of the request's streams are warming or were started by it (harness.serving.api.Answer)
    GET  /v1/status  every shard's streams, warming streams, events scored and start time (a restart shows)

Two deployments (harness.serving.config explains why): `ScoreIngress`, stateless, checks the API token, reads and
decodes a request, splits its events by shard and reassembles the answer; `StreamShard-<k>`, one replica each,
holds its streams' state (harness.serving.streams.StreamTable) and scores the events of up to `max_batch_size` requests
together (@serve.batch). A learned stream's training runs on the shard's one training thread, so the requests
waiting for it wait alone (harness.serving.streams).

Outside the harness: `serve run serve/config.yaml` (from the repository root), or
`serve run harness.serving.app:build_app config=<a ServiceConfig as JSON>`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from harness.serving.api import JSON, Answer, EventBatch, RequestError, check_size, decode, encode_answer
from harness.serving.http_guard import ADMIT_HEADER, ClientGone, admit_header, declared_length, error_body, read_body
from harness.serving.config import ServiceConfig, shard_of
from harness.serving.metrics import HANDLE_ROUTE, ServiceMetrics, for_replica, route_of
from harness.serving.streams import Scored
from harness.tokens import bearer_matches


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return status, error_body(message), JSON


class Streams:
    """The state of the streams of one shard, and their scoring, `max_batch_size` requests at a time."""

    def __init__(self, cfg: ServiceConfig, shard: int, metrics: ServiceMetrics | None = None):
        s = cfg.serve
        self.shard, self.metrics = shard, metrics
        self.training = ThreadPoolExecutor(1, thread_name_prefix=f"training-{shard}")
        self.table = cfg.stream_table(self.training)
        self._batched.set_max_batch_size(s.max_batch_size)
        self._batched.set_batch_wait_timeout_s(s.batch_wait_timeout_s)

    async def score(self, batch: EventBatch) -> Answer | RequestError:
        """The answer for one request's events (or why it is refused): scored with the requests batched beside
        it, then, for its streams that were training (or queued behind a training), once their job is done."""
        scored = await self._batched(batch)
        if isinstance(scored, RequestError):
            return scored
        for positions, job in scored.jobs:
            scored.scores[positions] = await asyncio.wrap_future(job)
        return Answer(scored.scores, self.table.warming(batch.streams), scored.started)

    @serve.batch
    async def _batched(self, batches: list[EventBatch]) -> list[Scored | RequestError]:
        """Each request's scores: the accepted requests are scored together (a stream's events in arrival order);
        a refused one gets its RequestError, without touching any state."""
        self.table.expire()
        results: list[Scored | RequestError | None] = [None] * len(batches)
        accepted, pending = [], {}
        for i, b in enumerate(batches):
            try:
                self.table.check(b, pending)
                accepted.append(i)
            except RequestError as exc:
                results[i] = exc
        if accepted:
            together = self.table.score(EventBatch.concat([batches[i] for i in accepted]))
            for i, part in zip(accepted, _split(together, [batches[i] for i in accepted])):
                results[i] = part
        if self.metrics is not None:
            self.metrics.streams(self.shard, self.table)  # per batch, at most every few seconds
        return results

    def status(self) -> dict:
        return {"shard": self.shard, "pid": os.getpid(), **self.table.status()}


def _split(together: Scored, batches: list[EventBatch]) -> list[Scored]:
    """The part of a batch's `Scored` that belongs to each request: its scores, the streams it was first to
    start, and its share of each job (a job's future answers for its positions in the whole batch)."""
    parts, start, claimed = [], 0, set()
    for b in batches:
        end = start + len(b)
        started = [s for s in b.streams if s in together.started and s not in claimed]
        claimed.update(started)
        jobs = []
        for positions, job in together.jobs:
            mine = (positions >= start) & (positions < end)
            if mine.any():
                jobs.append((positions[mine] - start, _take(job, np.flatnonzero(mine))))
        parts.append(Scored(together.scores[start:end].copy(), started, jobs))
        start = end
    return parts


def _take(job: Future, which: np.ndarray) -> Future:
    """A future of `job`'s scores at `which` (a request's share of a job that spans several requests)."""
    part: Future = Future()

    def done(f: Future) -> None:
        if f.exception() is not None:
            part.set_exception(f.exception())
        else:
            part.set_result(np.asarray(f.result())[which])

    job.add_done_callback(done)
    return part


@serve.deployment
class StreamShard(Streams):
    """One shard of a sharded service: the streams that hash to it."""

    def __init__(self, config: dict[str, Any], shard: int):
        cfg = ServiceConfig.model_validate(config)
        super().__init__(cfg, shard, _started(cfg))


@serve.deployment
class ScoreIngress:
    """HTTP in, answers out; also `handle_body` for callers inside the cluster (the same work without the proxy
    or the token). Without shard handles (one shard, one ingress replica) it holds the streams itself: one hop
    less."""

    def __init__(self, config: dict[str, Any], *shards: DeploymentHandle):
        self.config = ServiceConfig.model_validate(config)
        self.token = self.config.api_token
        self.admission: dict[str, str] = {}  # what the HTTP front is told to admit (harness.serving.http_guard)
        self.shards = shards
        self.metrics = _started(self.config)
        self.local = None if shards else Streams(self.config, 0, self.metrics)

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        response, events = await self._respond(request)
        self.metrics.answered(route_of(request.url.path), response.status_code, started, events)
        return response

    async def _respond(self, request: Request) -> tuple[Response, int]:
        """The answer to an HTTP request, and the events it scored."""
        if not self.admission:  # the route is known once a request has come (Serve mounts the app there)
            s, m = self.config.serve, self.metrics.app
            self.admission = {ADMIT_HEADER: admit_header(request.scope.get('root_path') or '/', s.admitted,
                                                         s.max_queued_requests, s.retry_after_s, m["application"], m["target"])}
        if self.token is not None and not bearer_matches(request.headers.get("authorization"), self.token):
            return Response(error_body("missing or wrong API token: send the header Authorization: Bearer <token>"),
                            status_code=401, media_type=JSON, headers={"WWW-Authenticate": "Bearer", **self.admission}), 0
        path = request.url.path.rstrip("/")
        if path.endswith("/v1/status") and request.method == "GET":
            return Response(json.dumps(await self.status()), media_type=JSON, headers=self.admission), 0
        headers, events = None, 0
        if not path.endswith("/v1/score"):
            status, body, kind = _error(404, f"no route {request.method} {request.url.path} (POST /v1/score, GET /v1/status)")
        elif request.method != "POST":
            status, body, kind = _error(405, "use POST for /v1/score")
        else:
            try:
                raw = await read_body(request.receive, declared_length(request.scope))
            except RequestError as exc:
                status, body, kind = _error(exc.status, exc.message)
                headers = {"Connection": "close"}  # the rest of the body is left unread
            except ClientGone:
                return Response(status_code=499), 0
            else:
                status, body, kind, events = await self._answer(raw, request.headers.get("content-type"))
        return Response(body, status_code=status, media_type=kind, headers={**self.admission, **(headers or {})}), events

    async def handle_body(self, body: bytes, content_type: str | None) -> tuple[int, bytes, str]:
        """(status, body, content type) of the answer to one request body: for callers inside the cluster
        (a DeploymentHandle), counted under route `handle`."""
        started = time.perf_counter()
        status, answer, kind, events = await self._answer(body, content_type)
        self.metrics.answered(HANDLE_ROUTE, status, started, events)
        return status, answer, kind

    async def _answer(self, body: bytes, content_type: str | None) -> tuple[int, bytes, str, int]:
        """(status, body, content type, events scored) of the answer to one request body."""
        s = self.config.serve
        try:
            batch = decode(body, content_type)
            check_size(batch, s.max_events_per_request, s.max_streams_per_request)
            answer = await self._score(batch)
        except RequestError as exc:
            return (*_error(exc.status, exc.message), 0)
        except Exception as exc:  # noqa: BLE001 - a shard that died or failed: the whole request fails, loudly
            first = str(exc).splitlines()[0] if str(exc) else ""
            return (*_error(503, f"scoring failed ({type(exc).__name__}: {first}); no scores are returned, though with "
                                 "several shards those that answered have scored their events"), 0)
        kind = (content_type or JSON).split(";")[0].strip().lower()
        return 200, encode_answer(answer, kind), kind, len(batch)

    async def _score(self, batch: EventBatch) -> Answer:
        if self.local is not None:
            return _raise_refused(await self.local.score(batch))
        n = len(self.shards)
        if n == 1:
            return _raise_refused(await self.shards[0].score.remote(batch))
        owner = np.array([shard_of(s, n) for s in batch.streams])[batch.index]
        parts = [(k, np.flatnonzero(owner == k)) for k in range(n)]
        parts = [(k, pos) for k, pos in parts if len(pos)]
        answers = await asyncio.gather(*(self.shards[k].score.remote(batch.select(pos)) for k, pos in parts))
        out = Answer(np.empty(len(batch)))
        for (_, pos), answer in zip(parts, answers):
            answer = _raise_refused(answer)
            out.scores[pos] = answer.scores
            out.warming.update(answer.warming)
            out.started.extend(answer.started)
        return out

    async def status(self) -> dict:
        if self.local is not None:
            return {"variant": self.config.variant.id, "shards": [self.local.status()]}
        shards = await asyncio.gather(*(s.status.remote() for s in self.shards))
        return {"variant": self.config.variant.id, "shards": list(shards)}


def _started(cfg: ServiceConfig) -> ServiceMetrics:
    """This replica's metrics, its start counted (a restarted replica counts again)."""
    metrics = for_replica(cfg.target)
    metrics.replica_started(serve.get_replica_context().deployment)
    return metrics


def _raise_refused(answer: Answer | RequestError) -> Answer:
    if isinstance(answer, RequestError):
        raise answer
    return answer


def build_app(args: dict[str, Any]):
    """The application for a ServiceConfig (a dict, or `config=<JSON>` from `serve run ... config=...`). With
    `serve.token_file` and no token given, the token is read from that file here."""
    from ray.serve.config import BackpressureConfig

    if "config" in args and isinstance(args["config"], str):
        args = json.loads(args["config"])
    cfg = ServiceConfig.model_validate(args)
    if cfg.api_token is None and cfg.serve.token_file is not None:
        from harness.tokens import read_token

        cfg = cfg.model_copy(update={"api_token": read_token(cfg.serve.token_file, "serve.token_file")})
    s = cfg.serve
    config = cfg.model_dump(mode="json")
    common = {"max_ongoing_requests": s.max_ongoing_requests}
    # Overload is refused at the door (503 + Retry-After) rather than queued into timeouts: the HTTP front admits
    # what the ingress replicas hold (harness.serving.http_guard, told by ADMIT_HEADER). Serve's own router queue is a
    # backstop as long (requests that race the router's first look at a new replica, handle callers, a proxy
    # without the guard); requests waiting there retry under backoff, which is what collapsed overload before.
    # The shards are called by the ingress only.
    door = {**common, "max_queued_requests": s.admitted,
            "backpressure_config": BackpressureConfig(retry_after_s=s.retry_after_s)}
    placed = {"label_selector": dict(cfg.labels)} if cfg.labels else {}  # the target's nodes only
    if s.single:
        return ScoreIngress.options(num_replicas=1, ray_actor_options={"num_cpus": s.cpus_per_shard, **placed}, **door).bind(config)
    shards = [
        StreamShard.options(name=f"StreamShard-{k}", num_replicas=1, ray_actor_options={"num_cpus": s.cpus_per_shard, **placed},
                            **common).bind(config, k)
        for k in range(s.shards)
    ]
    return ScoreIngress.options(
        num_replicas=s.ingress_replicas, ray_actor_options={"num_cpus": s.cpus_per_ingress, **placed}, **door
    ).bind(config, *shards)
