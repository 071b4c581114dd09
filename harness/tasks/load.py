"""The load task: a variant deployed on Ray Serve (harness/serving/app.py), its streams warmed, then loaded (docs/load.md).

1. Deploy the cell's variant with the scenario's `serve:` settings.
2. Warm-up (harness.load.warmup): each stream (the first `load.streams` corpus files) is sent its events in
   order until the service says it has scored (trained), stream by stream, so nothing measured is training;
   reported apart (`warmup`). The measured bodies continue each stream after the events the warm-up took.
3. In-process throughput: the same requests scored by a `StreamTable` in one process on the service's own nodes
   (its target's), no Serve, no HTTP: what the served figures are compared with.
4. For each path (http through the proxy, handle from inside the cluster), each rate (open loop) or
   concurrency (closed loop) is one run of `load.generators` generators, merged; then, with `find_peak`, the
   highest rate within the SLO. The first run may carry a py-spy profile and a replica kill (a fault).
   The kill hits the replica holding shard 0's streams (the only replica, for a single-deployment service).
5. Take the deployment down, whatever happened.

It runs in the driver, one at a time with nothing else running (a measurement needs the machine), through the
`cluster` the runner hands it (harness.execution.serving_cluster.RayServing): this module imports no Ray.
"""

from __future__ import annotations

import re
import time
import zlib
from typing import Any, Mapping, Protocol

import numpy as np

from harness.serving.api import EventBatch
from harness.load import LoadOutcome, LoadSettings, LoadSpec, RequestBodies, find_peak, request_bodies, warm_up
from harness.load.http_target import auth_headers
from harness.load.payload import stream_settings
from harness.results.schema import FaultFigures, LoadPoint, LoadResult, PeakFigures, WarmupFigures
from harness.serving.config import ServiceConfig
from harness.tasks.base import ReportProgress, RunContext, Task

ON_DRIVER = True  # the runner runs this kind in its own process, alone


class ServingCluster(Protocol):
    """What the load task needs from the cluster (implemented with Ray in harness.execution.serving_cluster)."""

    def deploy(self, config: ServiceConfig, name: str) -> Any: ...  # -> an object with .url and .deploy_s
    def undeploy(self, name: str) -> None: ...
    def post(self, service: Any, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
             ) -> tuple[int, bytes, str, str | None]: ...  # (status, answer, its content type, Retry-After), from the driver
    def replicas(self, service: Any) -> list[dict[str, Any]]: ...
    def load(self, service: Any, path: str, settings: LoadSettings, bodies: list[RequestBodies],
             profile: list[dict[str, Any]] | None = None, kill: tuple[dict[str, Any], float] | None = None
             ) -> tuple[LoadOutcome, dict[str, bytes], float | None]: ...
    def serve_environment(self) -> dict[str, str]: ...
    def beside(self, config: ServiceConfig, fn: Any, *args: Any) -> Any: ...  # fn(*args) on a node of the service's


def app_name(cell_id: str) -> str:
    """The Serve application (and route) of a cell's load test: its id, made safe; shortened ones keep a hash so
    two long ids never share a name."""
    safe = re.sub(r"[^A-Za-z0-9-]+", "-", cell_id)
    return "load-" + (safe if len(safe) <= 48 else f"{safe[:39]}-{zlib.crc32(cell_id.encode()):08x}")


def run(task: Task, ctx: RunContext, inputs: dict[str, Any], progress: ReportProgress, cluster: ServingCluster) -> tuple[LoadResult, dict[str, Any]]:
    spec = ctx.load
    assert spec is not None, "a load task needs the scenario's load: section"
    config = _service(task.cell, ctx)
    files = ctx.corpus.files[: spec.streams]
    if not files:
        raise ValueError("the corpus has no files to replay as streams")
    streams = {f.name: np.asarray(f.values, np.float64) for f in files}
    settings = stream_settings(streams, {f.name: {"length": f.n_rows} for f in files})  # order: arrival, too
    name = app_name(task.cell.id)
    service = cluster.deploy(config, name)
    try:
        warmup, used = _warm_up(cluster, service, streams, settings, spec.events_per_request, spec.encoding,
                                auth_headers(config.api_token))
        result = LoadResult(
            deploy_s=service.deploy_s, warmup=warmup, inprocess_eps=0.0,
            serve=config.serve.model_dump(), serve_environment=cluster.serve_environment(),
            events_per_request=spec.events_per_request, encoding=spec.encoding, streams=len(files),
            network=getattr(service, "network", None),
        )
        artefacts: dict[str, Any] = {}
        for i, path in enumerate(spec.paths):
            gens = _split(streams, spec.generators, spec.events_per_request, spec.encoding, settings, used)
            _measure_points(cluster, service, config, spec, path, gens, result, artefacts, first_path=i == 0)
            if spec.find_peak:
                result.peaks.append(_peak(cluster, service, spec, path, gens))
    finally:
        cluster.undeploy(name)
    # the ceiling, once the service is gone: a small node (a 1 GiB edge) holds one copy of a learned model, not two
    warm, rest = _cut(streams, used)
    result.inprocess_eps = cluster.beside(config, in_process_eps, config, warm, rest, settings, spec.events_per_request)
    progress(1)
    return result, artefacts


def _service(cell: Any, ctx: RunContext) -> ServiceConfig:
    """The cell's service, on its target's nodes, with the API token read from its file here, in the driver (the
    replicas and generators are given it)."""
    config = cell.service(ctx.serve, ctx.probation_percent, ctx.labels(cell))
    if config.serve.token_file:
        from harness.tokens import read_token

        config = config.model_copy(update={"api_token": read_token(config.serve.token_file, "serve.token_file")})
    return config


def _measure_points(cluster: ServingCluster, service: Any, config: ServiceConfig, spec: LoadSpec, path: str,
                    gens: list[RequestBodies], result: LoadResult, artefacts: dict[str, Any], first_path: bool) -> None:
    """One run per rate (or concurrency) on `path`, into `result`; the first run of the first path may carry the
    flame graphs (into `artefacts`) and the replica kill."""
    for j, point in enumerate(spec.points()):
        first = first_path and j == 0
        settings = spec.run_settings(point)
        profile = cluster.replicas(service) if first and spec.profile else None
        kill = None
        if first and spec.kill_replica_at_s is not None:
            shard = next(r for r in cluster.replicas(service) if r["deployment"] == config.serve.owner(0))
            kill = (shard, settings.warmup_s + spec.kill_replica_at_s)
        outcome, flames, killed_at = cluster.load(service, path, settings, gens, profile, kill)
        summary = outcome.summary(settings.rules)
        result.points.append(LoadPoint(path=path, summary=summary))
        if kill is not None:
            result.fault = _fault(summary, kill[0], spec.kill_replica_at_s, killed_at, spec.slo_p95_ms)
        for who, svg in flames.items():
            key = f"flame-{path}-{who}.svg"
            artefacts[key] = svg
            result.profiles.append(key)


def _peak(cluster: ServingCluster, service: Any, spec: LoadSpec, path: str, gens: list[RequestBodies]) -> PeakFigures:
    """The highest rate on `path` whose p95 meets the SLO, VALID (harness.load.peak), with every probe's run."""
    runs = []

    def measure(rate: float):
        settings = spec.run_settings(rate, spec.peak_duration_s)
        summary = cluster.load(service, path, settings, gens)[0].summary(settings.rules)
        runs.append(summary.model_copy(update={"per_second": []}))
        return summary

    peak = find_peak(measure, start_rps=spec.peak_start_rps, slo_p95_ms=spec.slo_p95_ms,
                     max_error_rate=spec.rules.max_error_rate, precision=spec.peak_precision, max_runs=spec.peak_max_runs)
    return PeakFigures(
        path=path, slo_p95_ms=spec.slo_p95_ms, peak_rps=peak.peak_rps,
        peak_eps=None if peak.summary is None else peak.summary.achieved_eps,
        summary=peak.summary, converged=peak.converged, probes=[p.model_dump() for p in peak.probes], runs=runs,
    )


def _cut(streams: dict[str, np.ndarray], used: dict[str, int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each stream cut where its warm-up ended (`used` events); the rest (the whole stream again if nothing is
    left) is what the in-process measurement replays."""
    warm, rest = {}, {}
    for name, values in streams.items():
        cut = used[name]
        warm[name] = np.take(values, np.arange(cut), mode="wrap")
        rest[name] = values[cut:] if cut < len(values) else values
    return warm, rest


def _warm_up(cluster: ServingCluster, service: Any, streams: dict[str, np.ndarray], settings: dict, epr: int,
             encoding: str, headers: Mapping[str, str]) -> tuple[WarmupFigures, dict[str, int]]:
    """Every stream warmed (harness.load.warmup) through `cluster.post`; a failure raises WarmupError, which fails
    the task; also the events each stream took."""
    warmed = warm_up(lambda body, kind, h: cluster.post(service, body, kind, h), streams, epr, encoding, settings,
                     headers=headers)
    figures = WarmupFigures(seconds=warmed.seconds, events=sum(warmed.events.values()), streams=len(warmed.events))
    return figures, warmed.events


def _split(streams: dict[str, np.ndarray], generators: int, epr: int, encoding: str, settings: dict,
           first: dict[str, int]) -> list[RequestBodies]:
    """Each generator replays its own streams, so a stream's events are sent by one generator, in order; each
    stream continues after the events its warm-up took (`first`)."""
    names = list(streams)
    return [request_bodies({n: streams[n] for n in names[k::generators]}, epr, encoding, settings=settings, first=first)
            for k in range(min(generators, len(names)))]


def in_process_eps(config: ServiceConfig, warm: dict[str, np.ndarray], rest: dict[str, np.ndarray], settings: dict,
                    epr: int) -> float:
    """Events per second a StreamTable scores in this process, on the same variant and request size, after the
    same warm-up: the ceiling the service is compared with."""
    table = config.stream_table()
    for name, values in warm.items():
        table.score(EventBatch.of([name] * len(values), np.zeros(len(values)), values, {name: settings[name]}))
    chunks = [EventBatch.of([name] * len(c), np.zeros(len(c)), c, {name: settings[name]})
              for name, values in rest.items() for c in (values[i : i + epr] for i in range(0, len(values), epr))]
    events, started = 0, time.perf_counter()
    while time.perf_counter() - started < 2.0:
        for chunk in chunks:
            table.score(chunk)
            events += len(chunk)
    return events / (time.perf_counter() - started)


def _fault(summary, replica: dict, at_s: float, killed_at: float | None, slo_p95_ms: float) -> FaultFigures:
    """What the kill cost: the run's errors, and the time from the kill to the end of the last second that had
    errors, shed requests or a p95 over the SLO (requests held while Serve restarts the replica show as latency,
    not errors)."""
    bad = [s.t for s in summary.per_second
           if s.t >= int(at_s) and (s.errors or s.shed or (s.p95_ms is not None and s.p95_ms > slo_p95_ms))]
    last = max((s.t for s in summary.per_second), default=None)
    return FaultFigures(replica=replica["deployment"], at_s=at_s, killed=killed_at is not None, errors=summary.errors,
                        recovery_s=(max(bad) + 1 - at_s) if bad else 0.0, recovered=not bad or max(bad) != last)
