"""Every panel of every generated Grafana dashboard shows something: a real Prometheus (tests/chaos/prom.py) in the
test cluster's namespace scrapes Ray's node metrics through the service-discovery file Ray's dashboard writes
(`<temp dir>/prom_metrics_service_discovery.json`) and a `harness run --metrics-port` whose load cell deploys the
scoring service on Serve and loads it over HTTP; while it runs (and through the run's last scrape), each panel's
query is asked of Prometheus' HTTP API until it returns a series.

The service's admission is one request at a time with no queue, so the open loop gets some requests shed (the
shed panels); a malformed body sent to the service's route gives the errors panel its 400. The scenario's `sla:`
gives the verdict panel its gauges.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import REPO, RayCluster, needs_netns, ray_env
from chaos.prom import Prometheus
from test_serve import PORT as SERVE_PORT

pytestmark = needs_netns

# Serve keeps one proxy port per cluster: the session cluster's services all use test_serve's (a test file given to
# the same xdist worker after another would otherwise be refused "Serve already runs ... on 127.0.0.1:8100")
SERVE_PORT, METRICS_PORT, PROM_PORT = SERVE_PORT, 9465, 9091
SCENARIO = f"""
name: live-monitoring
corpus: {{synthetic: {{seed: 7, rows: 600}}}}
detectors: [{{type: windowedGaussian, params: {{window: 50}}}}]
serve: {{port: {SERVE_PORT}, max_ongoing_requests: 1, max_queued_requests: 0}}
load:
  paths: [http]
  rates: [60]
  events_per_request: 200
  streams: 4
  duration_s: 8
  warmup_s: 0.5
  slo_p95_ms: 100
  rules: {{min_duration_s: 2, min_requests: 10}}
sla:
  p95_ms: 1000
  max_error_rate: 0.9
"""


def panels() -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) of every committed dashboard's queries."""
    spec = importlib.util.spec_from_file_location("dashboards", REPO / "clusters" / "monitoring" / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(path.stem, title, expr) for path in sorted(module.OUT.glob("*.json"))
            for title, expr in module.queries(json.loads(path.read_text()))]


def send_a_bad_request(cluster: RayCluster, stop: threading.Event) -> None:
    """Once the load cell's service has a route (Serve's /-/routes), a malformed body to it: a 400."""
    while not stop.wait(0.3):
        routes = cluster.run(["curl", "-s", "--max-time", "2", f"http://127.0.0.1:{SERVE_PORT}/-/routes"], timeout=10).stdout
        prefix = next((r for r in json.loads(routes or "{}") if r.startswith("/load")), None) if routes.startswith("{") else None
        if prefix is not None:
            cluster.run(["curl", "-s", "-H", "content-type: application/json", "-d", "not json",
                         f"http://127.0.0.1:{SERVE_PORT}{prefix}/v1/score"], timeout=10)
            return


def test_every_dashboard_panel_returns_data(ray_cluster: RayCluster, tmp_path: Path) -> None:
    started = time.monotonic()
    scenario = tmp_path / "live.yaml"
    scenario.write_text(SCENARIO)
    sd_file = ray_cluster.temp_dir / "prom_metrics_service_discovery.json"
    queries = panels()
    seen: dict[tuple[str, str, str], int] = {}
    with Prometheus(tmp_path / "prom", ray_cluster.cmd([]), static={"harness": [f"127.0.0.1:{METRICS_PORT}"]},
                    file_sd={"ray": [str(sd_file)]}, port=PROM_PORT, rules=[]) as prom:
        run = subprocess.Popen(ray_cluster.cmd([sys.executable, "-m", "harness", "run", str(scenario), "--out",
                                                str(tmp_path / "out"), "--address", ray_cluster.gcs_address,
                                                "--metrics-port", str(METRICS_PORT)]),
                               stdout=open(tmp_path / "run.log", "w"), stderr=subprocess.STDOUT, cwd=REPO,
                               env=ray_env(), start_new_session=True)
        stop = threading.Event()
        bad = threading.Thread(target=send_a_bad_request, args=(ray_cluster, stop), daemon=True)
        bad.start()
        try:
            while len(seen) < len(queries) and time.monotonic() - started < 55:
                for q in queries:
                    if q not in seen and prom.query(q[2]):
                        seen[q] = 1
                if run.poll() is not None and time.monotonic() - run_ended(run) > 3:
                    break  # the run is over and Prometheus has had its last scrapes
                time.sleep(0.5)
        finally:
            stop.set()
            if run.poll() is None:
                run.terminate()
            run.wait(timeout=60)
            out = (tmp_path / "run.log").read_text()
        targets = prom.targets_up()
    missing = [f"{d} / {t}: {e}" for d, t, e in queries if (d, t, e) not in seen]
    assert not missing, f"panels without data ({len(missing)} of {len(queries)}); targets {targets}; run:\n{out[-2000:]}\n" + "\n".join(missing)
    print(f"LIVE every panel ({len(queries)} queries) had data after {time.monotonic() - started:.1f} s")


_ENDED: dict[int, float] = {}


def run_ended(proc: subprocess.Popen) -> float:
    """When the run was first seen ended (monotonic)."""
    return _ENDED.setdefault(proc.pid, time.monotonic())
