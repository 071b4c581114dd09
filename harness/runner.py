"""The Ray runner: the only module that knows about Ray and placement.

Each cell runs as one Ray task (1 CPU). No address starts a private local Ray; `auto` (as under `ray job submit`)
or `host:port` joins an existing cluster. Results are yielded as cells finish, in completion order.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterator

from harness.corpus.layout import Corpus
from harness.scoring.profiles import Profile


def ray_environment() -> None:
    """Ray reads these at import and in every process it starts; explicit values avoid a stray
    ~/.ray/auth_token turning token auth on, and usage-stats calls to the outside."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def cpus(cell: dict[str, Any]) -> int:
    """CPUs a cell reserves: its backend's threads (1 without a backend)."""
    return int((cell.get("backend") or {}).get("threads", 1))


class RayRunner:
    def __init__(self, address: str | None = None, code: list[str] | None = None):
        """`code`: folders of user detector packages, shipped to the workers (Ray `py_modules`)."""
        self.address = address
        self.code = sorted(set(code or []))
        self._ray = None

    def __enter__(self) -> "RayRunner":
        ray_environment()
        import ray

        self._ray = ray
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:  # a submitted job brings its own runtime env
            runtime_env: dict[str, Any] = {}
            if self.code:
                runtime_env["py_modules"] = self.code
            if os.environ.get("HARNESS_CACHE"):  # workers keep models (and the corpus) where the driver says
                runtime_env["env_vars"] = {"HARNESS_CACHE": os.environ["HARNESS_CACHE"]}
            if runtime_env:
                kwargs["runtime_env"] = runtime_env
        if self.address is None:
            ray.init(address="local", include_dashboard=False, **kwargs)
        else:
            ray.init(address=self.address, **kwargs)
        return self

    def __exit__(self, *exc) -> None:
        if self._ray is not None:
            self._ray.shutdown()

    def describe(self) -> dict[str, Any]:
        ray = self._ray
        ctx = ray.get_runtime_context()
        return {
            "address": self.address or "local",
            "ray_version": ray.__version__,
            "cluster_resources": ray.cluster_resources(),
            "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
            "job_id": ctx.get_job_id(),
        }

    def run(
        self,
        cells: list[dict[str, Any]],
        corpus: Corpus,
        profiles: tuple[Profile, ...],
        thresholds: dict[str, dict[str, float]] | None,
        probation_percent: float,
        timing: dict[str, Any] | None = None,
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield (cell, result) as each cell completes; a crashed task is a failed result. An exclusively timed
        cell is yielded twice: with status "scored" when its scoring is done, then with its timing.

        A cell whose backend runs N threads reserves N CPUs. With `timing["exclusive"]`, a backend cell's latency
        is measured by a second task that reserves every CPU of the largest node: it runs alone there, once
        that node has no other work (in practice after the cells' scoring, one timing at a time)."""
        ray = self._ray
        from harness.cell_exec import execute_cell, time_job, with_timing

        task = ray.remote(max_retries=0, num_returns=2)(execute_cell)
        timer = ray.remote(max_retries=0)(time_job)
        biggest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        for c in [c for c in cells if cpus(c) > biggest]:
            cells.remove(c)  # it would wait forever for a node that big
            yield c, {"status": "failed", "error": f"needs {cpus(c)} CPUs on one node; the largest node has {biggest:g}", "seconds": {}}
        exclusive = bool((timing or {}).get("exclusive"))
        corpus_ref = ray.put(corpus)
        pending: dict[Any, tuple[dict[str, Any], Any, dict[str, Any] | None]] = {}  # ref -> (cell, job ref, result)
        for c in cells:
            result_ref, job_ref = task.options(num_cpus=cpus(c)).remote(
                c, corpus_ref, profiles, thresholds[c["detector"]] if thresholds else None, probation_percent, timing
            )
            pending[result_ref] = (c, job_ref, None)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell, job_ref, scored = pending.pop(done[0])
            try:
                result = ray.get(done[0])
                if scored is not None:  # a timing task finished
                    result = with_timing(scored, result)
                elif result["status"] == "ok" and cell.get("backend") and exclusive:
                    yield cell, {**result, "status": "scored"}  # scores go to disk now; the timing comes later
                    kept = {k: v for k, v in result.items() if k not in ("scores", "curve")}
                    pending[timer.options(num_cpus=biggest).remote(job_ref)] = (cell, None, kept)
                    continue
            except Exception as exc:  # noqa: BLE001 - a dead worker fails its cell, not the run
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0], "seconds": {}}
            yield cell, result
