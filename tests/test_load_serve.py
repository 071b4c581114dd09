"""Load tests against real Ray Serve deployments on the test cluster (inside its private network namespace).

- `harness load` against `harness serve`: an open loop shows a 1 s stall of the deployment in its p99; a closed
  loop with one client on the same stall hides it (coordinated omission).
- `harness run` of a scenario with `serve:` and `load:`: both paths, the peak search, flame graphs of every
  replica and the proxy, a shard killed mid-run, the serving table and the latency-throughput plot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from conftest import REPO, RayCluster
from test_serve import PORT, URL, Served

USERDET = str(REPO / "tests")
METRICS_PORT = 9464


class Scraper:
    """Scrapes a Prometheus endpoint inside the cluster's namespace every 0.3 s while the block runs (as a
    Prometheus server would, only faster); `samples`: each scrape's series as (name, labels, value)."""

    def __init__(self, cluster: RayCluster, url: str):
        self.cluster, self.url = cluster, url
        self.samples: list[list[tuple[str, dict[str, str], float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scrape, daemon=True)

    def _scrape(self) -> None:
        while not self._stop.wait(0.3):
            got = subprocess.run(self.cluster.cmd(["curl", "-s", "--max-time", "2", self.url]), capture_output=True, text=True)
            if got.returncode == 0 and got.stdout:
                from prometheus_client.parser import text_string_to_metric_families

                self.samples.append([(x.name, x.labels, x.value) for family in text_string_to_metric_families(got.stdout)
                                     for x in family.samples])

    def seen(self, name: str, **labels: str) -> list[float]:
        """Every value scraped of the series `name` whose labels include `labels`."""
        return [v for scrape in self.samples for n, ls, v in scrape if n == name and labels.items() <= ls.items()]

    def __enter__(self) -> "Scraper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


PRIMING_EVENTS = 8 * 800  # `harness load` trains its 8 streams with 800 events each before any run


def stall_scenario(tmp: Path, after_s: float) -> Path:
    """A deployment that stalls once for 1 s, `after_s` seconds after the load's priming: a time, not a count of
    events, so the stall lands inside the measured window however fast this machine serves."""
    path = tmp / "stall.yaml"
    path.write_text("name: stall\ndetectors: [{type: 'userdet:Stall', params: "
                    f"{{stall_s: 1.0, after_events: {PRIMING_EVENTS}, after_s: {after_s}}}}}]\n")
    return path


def load(cluster: RayCluster, *args: str) -> dict:
    proc = cluster.run([sys.executable, "-m", "harness", "load", URL, "--json", *args], timeout=120)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_an_open_loop_shows_a_stall_that_a_closed_loop_hides(ray_cluster: RayCluster, tmp_path: Path, monkeypatch) -> None:
    """The deployment stalls once, 1 s, inside the measured window: 3 s after the priming, that is after the 1 s
    of --warmup and about 2 s into the 6 s measured, in both loops."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [USERDET, os.environ.get("PYTHONPATH")])))
    figures = {}
    for mode, args in [("open", ["--rate", "20"]), ("closed", ["--concurrency", "1"])]:
        served = Served(ray_cluster, stall_scenario(tmp_path, 3.0), "Stall", tmp_path / f"serve-{mode}.log")
        try:
            figures[mode] = load(ray_cluster, "--events-per-request", "100", "--duration", "6", "--warmup", "1",
                                 "--min-duration", "5", *args)
        finally:
            served.stop()
    opened, closed = figures["open"], figures["closed"]
    assert opened["errors"] == 0 and closed["errors"] == 0
    # open loop: the ~20 requests due during the stall all wait for it, measured from when they were due
    assert opened["latency_ms"]["p99"] >= 500, opened["latency_ms"]
    # closed loop: its one client simply stops sending during the stall, one slow request among hundreds
    assert closed["requests"] > 200, closed
    assert closed["latency_ms"]["max"] >= 900, closed["latency_ms"]  # the stall did happen to it
    assert closed["latency_ms"]["p99"] < 0.25 * opened["latency_ms"]["p99"], (closed["latency_ms"], opened["latency_ms"])


def test_a_load_scenario_runs_end_to_end(ray_cluster: RayCluster, tmp_path: Path) -> None:
    scen = tmp_path / "load.yaml"
    scen.write_text(f"""
name: load-e2e
corpus: {{synthetic: {{seed: 7, rows: 2000}}}}
detectors:
  - type: windowedGaussian
    params: {{window: 200}}
serve: {{shards: 2, port: {PORT}}}
load:
  paths: [http, handle]
  rates: [20]
  events_per_request: 500
  streams: 4
  duration_s: 3
  warmup_s: 0.5
  find_peak: true
  peak_start_rps: 20
  peak_max_runs: 2
  peak_duration_s: 2
  profile: true
  kill_replica_at_s: 1.5
  slo_p95_ms: 100
  rules: {{min_duration_s: 2, min_requests: 30}}
""")
    out = tmp_path / "out"
    with Scraper(ray_cluster, f"http://127.0.0.1:{METRICS_PORT}/metrics") as scraped:
        proc = ray_cluster.run([sys.executable, "-m", "harness", "run", str(scen), "--out", str(out), "--address", ray_cluster.gcs_address,
                                "--metrics-port", str(METRICS_PORT)], timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Prometheus metrics, scraped from the run's endpoint while it ran: the load test second by second, the cell
    assert 1 in scraped.seen("harness_cells_planned", scenario="load-e2e"), scraped.samples[-1:]
    load_test = {"scenario": "load-e2e", "cell": "windowedGaussian", "path": "handle"}
    assert any(v > 0 for v in scraped.seen("harness_load_achieved_rps", **load_test)), "no second of the load test reported while it ran"
    assert any(v > 0 for v in scraped.seen("harness_load_latency_ms", **load_test, quantile="0.95"))
    assert 1 in scraped.seen("harness_cells_finished_total", scenario="load-e2e", status="ok")
    # the terminal summary: no p95, as the only fixed-rate run on http carried the replica kill; the peak column
    # exactly when the peak search found a peak at the SLO (two short probes on a busy machine may not)
    serving = pd.read_csv(out / "serving.csv")
    found_peak = serving.loc[serving["path"] == "http", "peak_eps_at_slo"].notna().any()  # the summary shows the client's path
    assert f"serving: {out / 'serving.md'}" in proc.stdout and " p95 ms" not in proc.stdout
    assert (" peak ev/s" in proc.stdout) == found_peak, proc.stdout
    result = json.loads((out / "cells" / "windowedGaussian" / "result.json").read_text())
    assert result["status"] == "ok" and result["kinds"] == ["score", "load"]
    load = result["tasks"]["load"]["result"]
    assert load["warmup"]["streams"] == 4 and load["warmup"]["seconds"] > 0 and load["inprocess_eps"] > 0
    assert [p["path"] for p in load["points"]] == ["http", "handle"]
    killed = load["points"][0]["summary"]  # the first run had the kill
    assert load["fault"]["killed"] and load["fault"]["replica"] == "StreamShard-0"
    assert killed["requests"] + killed["errors"] + killed["dropped"] > 0
    handle = load["points"][1]["summary"]
    assert handle["valid"], handle["reasons"]
    assert handle["requests"] + handle["errors"] + handle["dropped"] == 60  # the schedule: 20/s for 3 s
    assert handle["achieved_rps"] <= 20 and handle["errors"] == 0
    assert {p["path"] for p in load["peaks"]} == {"http", "handle"}
    for peak in load["peaks"]:
        assert len(peak["probes"]) <= 2 and len(peak["runs"]) == len(peak["probes"])
    for who in ("proxy", "ScoreIngress", "StreamShard-0", "StreamShard-1"):
        svg = out / "cells" / "windowedGaussian" / f"flame-http-{who}.svg"
        assert svg.is_file() and svg.read_bytes().lstrip().startswith(b"<?xml"), who
    table = pd.read_csv(out / "serving.csv")
    assert list(table["path"]) == ["http", "handle", "http", "handle"]
    assert list(table["run"]) == ["rate 20 (replica killed)", "rate 20", "peak", "peak"]
    from harness.results.columns import LOAD_COLUMNS

    assert list(table.columns) == [c.name for c in LOAD_COLUMNS if not c.target]  # no targets here
    assert (table["nab_standard"] == result["tasks"]["score"]["result"]["nab"]["profiles"]["standard"]["score"]).all()
    assert table.loc[1, "served_vs_inprocess"] == handle["achieved_eps"] / load["inprocess_eps"]
    assert "flame-http-proxy.svg" in table.loc[0, "flame_graphs"]
    assert (out / "latency_vs_throughput.png").stat().st_size > 10_000
    # the deployment goes afterwards (its deletion was asked for; Serve takes up to ~30 s to finish it)
    for _ in range(90):
        gone = ray_cluster.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{PORT}/load-windowedGaussian/v1/status"], timeout=30)
        if gone.stdout.strip() in ("404", "000"):
            break
        time.sleep(1)
    assert gone.stdout.strip() in ("404", "000"), gone.stdout
