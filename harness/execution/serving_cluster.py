"""The load task's cluster side (`RayServing`, harness.tasks.load's `ServingCluster`): deploys through
harness.serving.deploy, then runs load generators as Ray actors on the driver's node (the client side), records
py-spy flame graphs of replicas and kills a replica (a fault), each as a Ray task on the replica's node, and
merges the generators' live seconds for the run's metrics. Ray code, like the runner; what a service computes
lives in harness.serving.
"""

from __future__ import annotations

import time
from typing import Any

from harness.serving.config import ServiceConfig
from harness.serving.deploy import Service, deploy, undeploy

# Serve's environment settings that change throughput, recorded with every load cell
SERVE_ENVIRONMENT = (
    "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_RUN_SYNC_IN_THREADPOOL", "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE", "RAY_SERVE_LOG_TO_STDERR", "RAY_SERVE_ENABLE_TASK_EVENTS",
    "RAY_SERVE_USE_COMPACT_SCHEDULING_STRATEGY", "RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S", "RAY_SERVE_HTTP_KEEP_ALIVE_TIMEOUT_S",
)
START_DELAY_S = 1.0  # generators start together this long after they are asked to (their series line up)


class _Generator:
    """A load generator (a Ray actor with two threads): one run of harness.load against the service, over HTTP or
    a handle, while `second` reads the run's finished seconds (live metrics)."""

    def __init__(self) -> None:
        from harness.load import Recorder

        self.recorder = Recorder()

    def second(self, t: int) -> dict | None:
        return self.recorder.second_state(t)

    def run(self, settings: dict, path: str, url: str, app: str, bodies, start_at: float, token: str | None = None) -> dict:
        import asyncio

        from harness.load import LoadSettings, drive_async, run_load
        from harness.load.errors import Shed
        from harness.load.http_target import auth_headers
        from harness.load.response import check_response

        s = LoadSettings.model_validate(settings)
        if path == "http":
            return asyncio.run(drive_async(url, s, bodies, headers=auth_headers(token), start_at=start_at,
                                           recorder=self.recorder)).to_state()

        async def through_handle():
            from ray import serve
            from ray.serve.exceptions import BackPressureError

            handle = serve.get_app_handle(app)

            async def send(i: int) -> None:
                body, kind = bodies[i % len(bodies)]
                try:
                    status, answer, answer_type = await handle.handle_body.remote(body, kind)
                except BackPressureError as exc:  # the handle's way of shedding (HTTP's is 503 + Retry-After)
                    raise Shed(str(exc).splitlines()[0]) from None
                check_response(status, answer, answer_type, bodies.events[i % len(bodies)])

            return await run_load(s, send, events_per_request=bodies.events, start_at=start_at, recorder=self.recorder)

        return asyncio.run(through_handle()).to_state()


def _kill_later(pid: int, delay_s: float) -> float | None:
    """SIGKILL `pid` after `delay_s` (a Ray task on the process's node); the time it did, or None if it was gone."""
    import os
    import signal

    time.sleep(max(delay_s, 0.0))
    try:
        os.kill(pid, signal.SIGKILL)
        return time.time()
    except ProcessLookupError:
        return None


def _flame(pid: int, delay_s: float, duration_s: float) -> bytes:
    """A py-spy flame graph (SVG) of `pid` over `duration_s`, starting in `delay_s` (a Ray task on its node)."""
    import subprocess
    import tempfile

    time.sleep(max(delay_s, 0.0))
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/flame.svg"
        proc = subprocess.run(["py-spy", "record", "--pid", str(pid), "--duration", str(max(int(duration_s), 1)),
                               "--rate", "100", "--nonblocking", "--format", "flamegraph", "--output", out],
                              capture_output=True, text=True, timeout=duration_s + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"py-spy failed on pid {pid}: {proc.stderr.strip()[-300:]}")
        with open(out, "rb") as f:
            return f.read()


class RayServing:
    """The load task's `ServingCluster`, on the Ray cluster the driver joined (harness.tasks.load). `metrics`
    (harness.metrics.RunMetrics): where each second of a running load test is reported."""

    def __init__(self, metrics: Any = None):
        self.metrics = metrics

    def deploy(self, config: ServiceConfig, name: str) -> Service:
        return deploy(config, name)

    def undeploy(self, name: str) -> None:
        undeploy(name, wait=False)  # each load cell deploys under its own name: the next need not wait

    def post(self, service: Service, body: bytes, content_type: str, headers: dict[str, str] | None = None
             ) -> tuple[int, bytes, str, str | None]:
        """One request through the proxy, from the driver: (status, answer, its content type, Retry-After)."""
        import urllib.request

        req = urllib.request.Request(service.url, data=body, headers={"Content-Type": content_type, **(headers or {})},
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read(), r.headers.get("Content-Type", ""), r.headers.get("Retry-After")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", ""), exc.headers.get("Retry-After")

    def replicas(self, service: Service) -> list[dict[str, Any]]:
        return service.replicas()

    def beside(self, config: ServiceConfig, fn: Any, *args: Any) -> Any:
        """`fn(*args)` as a Ray task on a node the service's replicas may use (its target's). It reserves no CPU:
        the deployment holds some of a small node's already, and a load test runs alone. The load task calls it
        once the service is deleted, whose replicas take a few seconds to end: on a small node (a 1 GiB edge) a
        task that Ray's memory monitor kills meanwhile is tried again, up to 3 times, 5 s apart."""
        import time

        import ray

        options = {"num_cpus": 0, "max_retries": 0, **({"label_selector": dict(config.labels)} if config.labels else {})}
        for attempt in range(3):
            try:
                return ray.get(ray.remote(fn).options(**options).remote(*args))
            except ray.exceptions.OutOfMemoryError:
                if attempt == 2:
                    raise
                time.sleep(5.0)

    def serve_environment(self) -> dict[str, str]:
        import os

        return {k: os.environ[k] for k in SERVE_ENVIRONMENT if k in os.environ}

    def load(self, service: Service, path: str, settings, bodies: list, profile: list[dict[str, Any]] | None = None,
             kill: tuple[dict[str, Any], float] | None = None):
        """One run: a generator actor per bodies list, started together, merged; meanwhile flame graphs of the
        `profile` processes over the measured window and the `kill` (replica, seconds after the start)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from harness.load import LoadOutcome

        here = ray.get_runtime_context().get_node_id()  # the generators run beside the driver: the client side
        on = lambda node: NodeAffinitySchedulingStrategy(node, soft=False)  # noqa: E731
        actor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=2)(_Generator)
        gens = [actor.options(scheduling_strategy=on(here)).remote() for _ in bodies]
        per = settings.model_copy(update={"rate": settings.rate / len(bodies) if settings.rate else None,
                                          "concurrency": max(1, settings.concurrency // len(bodies)) if settings.concurrency else None})
        start_at = time.time() + START_DELAY_S
        # each generator its own seed (Poisson schedules must not coincide), and constant-rate ones staggered
        stagger = 1.0 / settings.rate if settings.rate else 0.0
        runs = [g.run.remote({**per.model_dump(), "seed": settings.seed + k}, path, service.url, service.name, b,
                             start_at + k * stagger, service.config.api_token)
                for k, (g, b) in enumerate(zip(gens, bodies))]
        flames = {}
        if profile:
            task = ray.remote(num_cpus=0, max_retries=0)(_flame)
            delay = start_at - time.time() + settings.warmup_s
            flames = {r["deployment"]: task.options(scheduling_strategy=on(r["node_id"])).remote(r["pid"], delay, settings.duration_s)
                      for r in profile}
        killed = None
        if kill:
            replica, after_s = kill
            killed = ray.remote(num_cpus=0, max_retries=0)(_kill_later).options(
                scheduling_strategy=on(replica["node_id"])).remote(replica["pid"], start_at - time.time() + after_s)
        try:
            states = self._wait(runs, gens, start_at + settings.warmup_s, service.config.variant.id, path,
                                service.config.target)
        finally:
            for g in gens:
                ray.kill(g)
        outcome = LoadOutcome.from_state(states[0])
        for state in states[1:]:
            outcome.merge(LoadOutcome.from_state(state))
        svgs = {who: ray.get(ref) for who, ref in flames.items()}
        killed_at = ray.get(killed) if killed is not None else None
        return outcome, svgs, killed_at

    def _wait(self, runs: list, gens: list, window_at: float, cell: str, path: str, target: str) -> list[dict]:
        """The generators' results; meanwhile, with metrics, each finished second of the measured window
        (starting at epoch `window_at`), merged over the generators."""
        import math

        import ray

        from harness.load.recorder import merged_second
        from harness.metrics import QUANTILES

        reported = -1
        while True:
            done, _ = ray.wait(runs, num_returns=len(runs), timeout=0.5 if self.metrics else None)
            if len(done) == len(runs):
                return ray.get(runs)
            last = math.floor(time.time() - window_at) - 1  # the last whole second, with a margin for stragglers
            if last > reported:
                reported = last
                states = [s for s in ray.get([g.second.remote(last) for g in gens]) if s is not None]
                if states:
                    requests, events, errors, latency, shed = merged_second(states, QUANTILES)
                    self.metrics.load_second(cell, path, requests, events, errors, latency, shed=shed, target=target)
