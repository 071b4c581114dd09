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
        if self.code and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:  # a submitted job ships its own working_dir
            kwargs["runtime_env"] = {"py_modules": self.code}
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
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield (cell, result) as each cell's task completes; a crashed task is a failed result."""
        ray = self._ray
        from harness.cell_exec import execute_cell

        task = ray.remote(num_cpus=1, max_retries=0)(execute_cell)
        corpus_ref = ray.put(corpus)
        pending = {
            task.remote(c, corpus_ref, profiles, thresholds[c["detector"]] if thresholds else None, probation_percent): c
            for c in cells
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            cell = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a dead worker fails its cell, not the run
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0], "seconds": {}}
            yield cell, result
