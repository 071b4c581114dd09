"""The scoring service's own Prometheus metrics, recorded with `ray.util.metrics` in the process that sees what is
counted (docs/serving.md#metrics):

- the ingress replica: every request it answers (by route and status code), its latency, the events scored and the
  requests refused or failed (by reason);
- the shard that holds the streams: streams held and streams still warming (gauges, by shard);
- Serve's proxy (harness.serving.http_guard, the HTTP front door): requests shed with 503 + Retry-After, and the
  bodies it refuses itself (408, 413) for a service it knows;
- every replica's constructor: a replica start (a restart shows as a second start of the same deployment).

Ray exports them through each node's metrics agent as `ray_harness_serve_*`; its counters gain `_total`. All are
recorded per request or per batch, never per event, and the metric objects are made once per process, on first
use (Ray registers a metric with its agent when it is made).
"""

from __future__ import annotations

import time
from typing import Any

LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]  # 1 ms .. 1 s, and beyond: overload
ROUTES = ("/v1/score", "/v1/status")  # what `route` says; any other path is `other` (bounded label values)
HANDLE_ROUTE = "handle"  # a DeploymentHandle caller inside the cluster (no HTTP)
GAUGE_EVERY_S = 2.0  # a shard sets its stream gauges at most this often: counting warming streams visits each stream
REASONS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 408: "body_timeout",
           409: "conflict", 413: "too_large", 415: "unsupported_media_type", 429: "stream_limit",
           431: "head_too_large", 499: "client_gone", 503: "scoring_failed"}
LOCAL = "local"  # the target of a service that has none (a plain `harness serve`)


def route_of(path: str) -> str:
    """The `route` label of a request path (under any route prefix): one of ROUTES, else `other`."""
    path = path.rstrip("/")
    return next((r for r in ROUTES if path.endswith(r)), "other")


def reason_of(status: int) -> str:
    """The `reason` label of a refused or failed request's status code."""
    return REASONS.get(status, f"http_{status}")


class _Metrics:
    """The metric objects of this process (one set, whatever the services: the labels tell them apart)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        app = ("application", "target")
        self.requests = Counter("harness_serve_requests", "requests the service answered, by route and status code",
                                (*app, "route", "code"))
        self.latency = Histogram("harness_serve_request_latency_ms", "time the ingress took to answer a request (ms)",
                                 LATENCY_BUCKETS_MS, (*app, "route"))
        self.events = Counter("harness_serve_events", "events scored", app)
        self.errors = Counter("harness_serve_errors", "requests refused or failed (not shed), by reason", (*app, "reason"))
        self.shed = Counter("harness_serve_shed", "requests shed at the HTTP front: 503 + Retry-After (overload)", app)
        self.streams = Gauge("harness_serve_streams", "streams a shard holds", (*app, "shard"))
        self.warming = Gauge("harness_serve_warming_streams", "streams of a shard not yet past their probation",
                             (*app, "shard"))
        self.starts = Counter("harness_serve_replica_starts", "replica constructors run (restarts: starts beyond the "
                              "first)", (*app, "deployment"))


_METRICS: _Metrics | None = None


def _metrics() -> _Metrics:
    global _METRICS
    if _METRICS is None:
        _METRICS = _Metrics()
    return _METRICS


class ServiceMetrics:
    """One service's metrics in this process: its `application` and `target` labels bound, the tag dictionaries
    of each (route, code) made once."""

    def __init__(self, application: str, target: str):
        self.m = _metrics()
        self.app = {"application": application, "target": target}
        self._tags: dict[tuple[str, ...], dict[str, str]] = {}
        self._gauges_at: dict[int, float] = {}

    def _with(self, **more: str) -> dict[str, str]:
        key = tuple(more.items())
        tags = self._tags.get(key)
        if tags is None:
            tags = self._tags[key] = {**self.app, **more}
        return tags

    def answered(self, route: str, status: int, started_s: float | None = None, events: int = 0) -> None:
        """A request answered with `status` (scored `events` if 200); its latency since `started_s`
        (time.perf_counter()), if given."""
        m = self.m
        m.requests.inc(1, self._with(route=route, code=str(status)))
        if started_s is not None:
            m.latency.observe((time.perf_counter() - started_s) * 1e3, self._with(route=route))
        if status >= 400:
            m.errors.inc(1, self._with(reason=reason_of(status)))
        elif events:
            m.events.inc(events, self.app)

    def shed(self, route: str) -> None:
        """A request shed at the front door (503 + Retry-After): answered, but neither an error nor scored."""
        self.m.requests.inc(1, self._with(route=route, code="503"))
        self.m.shed.inc(1, self.app)

    def streams(self, shard: int, table: Any, force: bool = False) -> None:
        """A shard's streams and warming streams (from its StreamTable), at most every GAUGE_EVERY_S."""
        now = time.monotonic()
        if not force and now - self._gauges_at.get(shard, -GAUGE_EVERY_S) < GAUGE_EVERY_S:
            return
        self._gauges_at[shard] = now
        status = table.status()
        tags = self._with(shard=str(shard))
        self.m.streams.set(status["streams"], tags)
        self.m.warming.set(status["warming"], tags)

    def replica_started(self, deployment: str) -> None:
        self.m.starts.inc(1, self._with(deployment=deployment))


def for_replica(target: str) -> ServiceMetrics:
    """The metrics of the service this Serve replica belongs to (its application, from Serve's replica context)."""
    from ray import serve

    return ServiceMetrics(serve.get_replica_context().app_name, target)
