"""Prometheus service discovery for a private Ray (one the harness starts itself, `harness serve` or `harness run`
without `--address`).

Ray writes `<temp dir>/prom_metrics_service_discovery.json` (every live node's metrics-export address, in
Prometheus' file_sd format) from its dashboard's reporter module only; a private Ray runs without the dashboard
(it costs 11 more processes and about 1 GB here), so nothing would write it and Prometheus would not find the
node's metrics agent (Ray's, Serve's and the service's own metrics). The driver writes the same file, in the same
place, for as long as it runs: clusters/monitoring/prometheus.yml then works alike on a private Ray, a cluster
and `harness cluster up`'s topology (whose head runs the dashboard).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

FILE = "prom_metrics_service_discovery.json"  # Ray's name (ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE)
EVERY_S = 5.0  # as often as Ray's own writer


def targets(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd content for `ray.nodes()`: each live node's metrics agent, job `ray` (as Ray writes it)."""
    live = [f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in nodes if n.get("Alive") and n.get("MetricsExportPort")]
    return [{"labels": {"job": "ray"}, "targets": live}]


def write(folder: str, content: list[dict[str, Any]]) -> str:
    """Write `content` to `folder`/FILE atomically (Prometheus may read it at any moment); its path."""
    path = os.path.join(folder, FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(content, f)
    os.replace(tmp, path)
    return path


class DiscoveryWriter:
    """A daemon thread that keeps `<temp dir>/FILE` (and the session's copy) current until `stop`."""

    def __init__(self, temp_dir: str, session_dir: str):
        self.folders = [session_dir, temp_dir]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prometheus-discovery", daemon=True)

    def start(self) -> "DiscoveryWriter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import ray

        while not self._stop.is_set():
            try:
                content = targets(ray.nodes())
                for folder in self.folders:
                    write(folder, content)
            except Exception:  # noqa: BLE001 - Ray going down, a folder removed: monitoring must not end a run
                pass
            self._stop.wait(EVERY_S)


def start_for_private_ray(session_dir: str) -> DiscoveryWriter:
    """The writer for the Ray this process started: its session folder (`ray.init(...).address_info`) and the temp
    folder above it, where Prometheus looks (clusters/monitoring/prometheus.yml)."""
    return DiscoveryWriter(os.path.dirname(session_dir.rstrip("/")), session_dir).start()
