"""The edge playbooks (docs/playbooks.md), each proven on the local topology: ONE `harness cluster up` of
tests/chaos/edge-topology.yaml for the file (an edge of 1 CPU and 1 GiB, 40 ms away), a `harness run` on the client
node serving windowedGaussian on the edge under a steady open-loop load (its exporter gives the client's view), and
a real Prometheus in the client namespace scraping the run's exporter and every node's Ray metrics (job `ray-nodes`:
the file `harness cluster targets` writes, each node labelled with its tier; Ray's own service-discovery file names
the same endpoints without labels), evaluating clusters/monitoring/alerts/*.yml.

Each test breaks the edge, asserts the playbook's alert fires on the real series, runs the playbook's fix, and
measures the seconds from the fault (or the fix) to the first whole second the client sees back within the SLO,
printed as `RECOVERY <name> <s> s`. Ray's node health check is shortened for the file (a dead node is declared so in
~3 s rather than ~15 s): the test waits less, the mechanism is Ray's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.chaos.prom import Prometheus
from tests.conftest import REPO, REQUIREMENTS, can_isolate, needs_netns, needs_prometheus, require, stop_group

pytestmark = [pytest.mark.timeout(400), pytest.mark.quiet, needs_netns, needs_prometheus]

HERE = Path(__file__).resolve().parent
TOPOLOGY = HERE / "edge-topology.yaml"
SCENARIO = HERE / "edge-scenario.yaml"
SPEC = yaml.safe_load(SCENARIO.read_text())
SLO_MS = SPEC["load"]["slo_p95_ms"]
RATE = SPEC["load"]["rates"][0]
CELL = "windowedGaussian@edge"
EXPORTER = 9464
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
          "RAY_health_check_initial_delay_ms": "1000",
          "RAY_metrics_report_interval_ms": "1000"}  # Ray's agents report every second, not every 10


@dataclass
class Edge:
    """The file's world: the topology, the run loading the edge, and Prometheus watching both."""

    name: str
    env: dict[str, str]
    tmp: Path
    targets: Path
    prom: Prometheus
    run: subprocess.Popen
    state: Any = None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A `harness` command as the playbook prints it."""
        proc = subprocess.run([sys.executable, "-m", "harness", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, check=False)
        assert proc.returncode == 0, f"harness {' '.join(args)}: {proc.stderr[-2000:]}"
        return proc

    def node(self, name: str) -> Any:
        from harness.topology import load_state

        self.state = load_state(Path(self.env["HARNESS_STATE_DIR"]) / f"{self.name}.json")
        return next(n for n in self.state.nodes if n.name == name)

    def client_second(self, at: float | None = None) -> tuple[float | None, float, float]:
        """The client's p95 (ms), requests/s and failed requests so far, as Prometheus has them (now, or at `at`)."""
        def one(expr: str) -> float | None:
            params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
            got = json.loads(self.prom.get("/api/v1/query", **params))["data"]["result"]
            return float(got[0]["value"][1]) if got else None

        p95 = one(f'harness_load_latency_ms{{cell="{CELL}",quantile="0.95"}}')
        return p95, one(f'harness_load_achieved_rps{{cell="{CELL}"}}') or 0.0, one(f'harness_load_errors_total{{cell="{CELL}"}}') or 0.0

    def wait_healthy(self, since: float, timeout_s: float) -> float:
        """Seconds from `since` to the first whole second the client got its rate within the SLO (from Prometheus's
        record of the exporter, second by second; each second is reported once it is over, so a second recorded
        after a fix is the fix's); fails after `timeout_s`."""
        deadline = time.time() + timeout_s
        while True:
            first = self.first_good_second(since)
            if first is not None:
                return first - since
            if self.run.poll() is not None:
                log = (self.tmp / "run.log").read_text(errors="replace").splitlines()
                pytest.fail(f"the run loading the edge ended (status {self.run.returncode}): "
                            + " | ".join(ln for ln in log if "ServeController" not in ln)[-3000:], pytrace=False)
            assert time.time() < deadline, (f"{CELL}: no second within the SLO ({SLO_MS} ms at {RATE}/s) in "
                                            f"{timeout_s:g} s; now p95, rps, errors = {self.client_second()}")
            time.sleep(1.0)

    def seconds(self, since: float, until: float | None = None) -> dict[float, bool]:
        """Each second's scrape from `since` (to `until`, else now): whether >= 80% of the rate was answered with
        p95 within the SLO (a whole second of a steady load counts one request more or less at its edges)."""
        def series(expr: str) -> dict[float, float]:
            got = json.loads(self.prom.get("/api/v1/query_range", query=expr, start=f"{since:.3f}",
                                           end=f"{until or time.time():.3f}", step="1"))["data"]["result"]
            return {float(t): float(v) for t, v in got[0]["values"]} if got else {}

        p95 = series(f'harness_load_latency_ms{{cell="{CELL}",quantile="0.95"}}')
        rps = series(f'harness_load_achieved_rps{{cell="{CELL}"}}')
        return {t: rps[t] >= 0.8 * RATE and p95.get(t, 1e9) <= SLO_MS for t in sorted(rps)}

    def first_good_second(self, since: float) -> float | None:
        """The first scrape after `since` whose second was within the SLO."""
        return next((t for t, ok in self.seconds(since).items() if ok and t > since), None)

    def steady(self, *quiet: str, timeout_s: float = 90) -> None:
        """Before a fault: the client's last 3 seconds within the SLO and none of the `quiet` alerts firing (on a
        machine shared with other work, the edge's one core can miss its SLO with no fault of ours: then the test
        cannot tell its fault's signal from that, and fails saying so)."""
        deadline = time.time() + timeout_s
        while True:
            recent = self.seconds(time.time() - 3.5)
            p95, rps, _ = self.client_second()
            firing = [a for a in quiet if self.prom.firing(a)]
            if not firing and len(recent) >= 3 and all(recent.values()):
                return
            if time.time() > deadline:
                pytest.fail(f"the edge is not steady before the fault after {timeout_s:g} s (the machine too busy?): "
                            f"client p95 {p95} ms at {rps}/s; firing {firing}", pytrace=False)
            time.sleep(1.0)

    def write_targets(self) -> list[dict[str, Any]]:
        """The playbook's `harness cluster targets NAME --out FILE`, until every node's Ray port is known."""
        deadline = time.monotonic() + 30
        while True:
            self.cli("cluster", "targets", self.name, "--out", str(self.targets))
            doc = json.loads(self.targets.read_text())
            if len(doc) == 3 or time.monotonic() > deadline:
                return doc
            time.sleep(0.5)


def _topology(tmp: Path) -> tuple[str, Path]:
    """The test topology under a unique name and subnet."""
    name = f"ec{uuid.uuid4().hex[:6]}"
    data = yaml.safe_load(TOPOLOGY.read_text())
    data.update(name=name, subnet=f"10.{240 + int(name[2:4], 16) % 10}.{int(name[4:6], 16)}.0/24")
    path = tmp / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return name, path


def _keep_ray_logs(tmp: Path, name: str) -> None:
    """Before `down` deletes them: Ray's and Serve's logs of every node, for a setup that failed."""
    import shutil

    from harness.topology import load_state

    path = tmp / "state" / f"{name}.json"
    state = load_state(path) if path.exists() else None
    for logs in Path(state.temp_root).glob("*/session_latest/logs") if state else []:
        shutil.copytree(logs, tmp / "ray-logs" / logs.parts[-3], ignore=shutil.ignore_patterns("*.pid", "events"),
                        dirs_exist_ok=True)
    print(f"Ray's logs kept in {tmp / 'ray-logs'}")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """Long because it builds the whole world and always takes it down: topology up, the run loading the edge,
    Prometheus in the client namespace; then the checks in the test functions, in file order."""
    require(can_isolate(), REQUIREMENTS["needs_netns"][1])
    tmp = tmp_path_factory.mktemp("edge")
    name, path = _topology(tmp)
    env = {**os.environ, **HEALTH, "HARNESS_STATE_DIR": str(tmp / "state"), "PYTHONPATH": str(REPO),
           "RAY_USAGE_STATS_ENABLED": "0", "HARNESS_HISTORY": "off", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    up = subprocess.run([sys.executable, "-m", "harness", "cluster", "up", str(path)], env=env, capture_output=True,
                        text=True, timeout=180, cwd=REPO, check=False)
    run: subprocess.Popen | None = None
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        from harness.topology import load_state

        state = load_state(tmp / "state" / f"{name}.json")
        with open(tmp / "run.log", "w") as log:
            run = subprocess.Popen([sys.executable, "-m", "harness", "cluster", "exec", name, "--", sys.executable, "-m",
                                    "harness", "run", str(SCENARIO), "--address", state.head_address, "--out",
                                    str(tmp / "run"), "--metrics-port", str(EXPORTER)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        targets = tmp / "ray-targets.json"
        prom = Prometheus(tmp / "prom", ["ip", "netns", "exec", state.client.namespace],
                          static={"harness": [f"127.0.0.1:{EXPORTER}"]}, file_sd={"ray-nodes": [str(targets)]})
        world = Edge(name, env, tmp, targets, prom, run, state)
        assert {d["labels"]["tier"] for d in world.write_targets()} == {"cloud", "edge", "client"}
        with prom:
            begun = time.time()
            world.wait_healthy(begun, timeout_s=240)
            world.steady()
            print(f"\nSETUP edge world up and healthy in {time.monotonic() - started:.1f} s")
            yield world
    except BaseException:
        _keep_ray_logs(tmp, name)
        raise
    finally:
        if run is not None:
            stop_group(run, grace_s=5)
        subprocess.run([sys.executable, "-m", "harness", "cluster", "down", name], env=env, capture_output=True,
                       timeout=120, cwd=REPO, check=False)
        print(f"TEARDOWN edge world: {time.monotonic() - started:.1f} s since up")


def _tc_rate(edge: Edge, rate: str) -> None:
    """The edge link's bandwidth toward the edge (the hub's end of its veth: `veths` are in node order), changed
    live with tc."""
    edge.node("edge")
    i = [n.name for n in edge.state.nodes].index("edge")
    subprocess.run(["ip", "netns", "exec", edge.state.hub, "tc", "qdisc", "change", "dev", edge.state.veths[i], "root",
                    "handle", "2:", "tbf", "rate", rate, "burst", "16000", "latency", "100ms"], check=True)


def test_edge_link_degraded(edge: Edge) -> None:
    """Bandwidth toward the edge cut to 160 kbit/s (tbf, live): the client's p95 and timeouts miss the SLO while the
    edge serves fast; HarnessEdgeLinkDegraded fires; restoring the link's rate brings the SLO back."""
    edge.steady("HarnessEdgeLinkDegraded", "HarnessEdgeCpuStarved")
    _tc_rate(edge, "160kbit")
    cut = time.time()
    try:
        fired = edge.prom.wait_firing("HarnessEdgeLinkDegraded", timeout_s=30, cell=CELL)
        assert fired["labels"]["playbook"] == "edge-link-degraded"
        assert edge.prom.firing("HarnessEdgeCpuStarved") == []  # the edge itself is fine
    finally:
        _tc_rate(edge, f"{edge.node('edge').link.rate_mbit:g}mbit")  # the fix (docs/playbooks.md)
    fixed = time.time()
    seconds = edge.wait_healthy(fixed, timeout_s=40)
    print(f"RECOVERY edge-link-degraded {seconds:.1f} s after the fix ({fixed - cut + seconds:.1f} s from the cut; "
          f"alert and fix {fixed - cut:.1f} s after it)")


def test_edge_cpu_starved(edge: Edge) -> None:
    """The edge's CPU quota cut to 0.1 core (harness cluster limit): its replicas' p95 leaves 100 ms,
    HarnessEdgeCpuStarved fires; the quota lifted again, the SLO comes back."""
    edge.steady("HarnessEdgeCpuStarved")
    edge.cli("cluster", "limit", edge.name, "edge", "--cpus", "0.1")
    cut = time.time()
    try:
        fired = edge.prom.wait_firing("HarnessEdgeCpuStarved", timeout_s=40, tier="edge")
        assert fired["labels"]["playbook"] == "edge-cpu-starved"
    finally:
        edge.cli("cluster", "limit", edge.name, "edge", "--cpus", "max")
    fixed = time.time()
    seconds = edge.wait_healthy(fixed, timeout_s=60)
    print(f"RECOVERY edge-cpu-starved {seconds:.1f} s after the fix ({fixed - cut + seconds:.1f} s from the cut; "
          f"alert and fix {fixed - cut:.1f} s after it)")


HOGS = """
import json, os, sys, time, ray
ray.init(address=os.environ["RAY_ADDRESS"], _node_ip_address=os.environ["HARNESS_NODE_IP"], logging_level="ERROR")
go = sys.argv[1]
@ray.remote(num_cpus=0.01, max_retries=3, label_selector={"tier": "edge"})
def score(mib, hold_s):  # a scoring task's resident model and buffers, held while it scores
    import numpy as np
    block = np.ones(mib * 2**20 // 8)
    time.sleep(hold_s)
    return float(block[0])
def batch(tasks, mib, hold_s, reserve_mib):
    opts = {"memory": reserve_mib * 2**20} if reserve_mib else {}
    out = []
    for r in [score.options(**opts).remote(mib, hold_s) for _ in range(tasks)]:
        try:
            out.append(ray.get(r, timeout=120) == 1.0)
        except Exception as exc:
            out.append(type(exc).__name__)
    print("OUTCOME", json.dumps(out), flush=True)
batch(4, 64, 3.0, None)  # over-subscribed: all at once
while not os.path.exists(go):  # the test has seen the alert
    time.sleep(0.1)
batch(3, 64, 1.0, 700)  # limited: each reserves 700 MiB of the edge's 1 GiB, so one at a time
"""


def _outcome(proc: subprocess.Popen) -> list[Any]:
    """The next batch's outcome, from the line the driver prints (Ray prints its OOM advice around it)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("OUTCOME "):
            return json.loads(line.removeprefix("OUTCOME "))
    raise AssertionError(f"the driver ended (status {proc.wait()}) without its outcome")


def _evictions(edge: Edge) -> float:
    got = edge.prom.query('sum(ray_memory_manager_worker_eviction_total{tier="edge"})')
    return float(got[0]["value"][1]) if got else 0.0


def test_edge_memory_exhausted(edge: Edge) -> None:
    """Four parallel scoring tasks of 64 MiB (and a Python worker each) on the 1 GiB edge, beside its Ray and the
    served replica: Ray's memory monitor kills workers, HarnessEdgeMemoryPressure fires on Ray's eviction counter;
    the fix, the edge's parallelism limited by a per-task memory reservation (the target's `memory:`, here one task
    at a time), runs them with none killed, and the service stays within its SLO. (Tasks are retriable, as
    scoring tasks are: Ray's monitor then kills them before the service's replica.)"""
    edge.steady("HarnessEdgeMemoryPressure")
    started = time.time()
    go = edge.tmp / "memory-fix"
    driver = subprocess.Popen([sys.executable, "-m", "harness", "cluster", "exec", edge.name, "--", sys.executable, "-c",
                               HOGS, str(go)], env=edge.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, cwd=REPO, start_new_session=True)
    try:
        outcome = _outcome(driver)
        fired = edge.prom.wait_firing("HarnessEdgeMemoryPressure", timeout_s=20, tier="edge")
        assert fired["labels"]["playbook"] == "edge-memory-exhausted"
        evictions = _evictions(edge)
        assert evictions >= 1
        fixed = time.time()
        go.touch()  # the fix: the same work, its parallelism limited
        assert _outcome(driver) == [True] * 3
        assert driver.wait(timeout=30) == 0
    finally:
        stop_group(driver, grace_s=5)
    time.sleep(2.0)  # a scrape after the last task
    assert _evictions(edge) == evictions, "a worker was killed under the parallelism limit"
    seconds = edge.wait_healthy(fixed, timeout_s=30)
    edge.wait_healthy(time.time() - 3, timeout_s=30)  # and still within the SLO once the limited tasks are done
    over = edge.seconds(started, fixed)
    print(f"RECOVERY edge-memory-exhausted {max(seconds, 0.0):.1f} s after the fix; {evictions:.0f} worker(s) killed "
          f"under over-subscription (tasks, retried: {outcome}), none under the limit; the service missed its SLO "
          f"{sum(not ok for ok in over.values())} of {len(over)} s while over-subscribed")


def test_edge_node_lost(edge: Edge) -> None:
    """SIGKILL to the edge node's Ray process group: HarnessEdgeNodeLost fires; `harness cluster restart` brings
    the node back, Serve places the replica (and a proxy) there again, and the client's load recovers. Measured:
    seconds from the loss to the first second back within the SLO, and the requests that failed meanwhile."""
    edge.steady("HarnessEdgeNodeLost")
    node = edge.node("edge")
    _, _, errors_before = edge.client_second()
    before = {r["metric"].get("WorkerId") for r in edge.prom.query('ray_serve_num_http_requests_total{tier="edge"}')}
    os.killpg(node.pids[0], signal.SIGKILL)
    lost = time.time()
    fired = edge.prom.wait_firing("HarnessEdgeNodeLost", timeout_s=30, tier="edge")
    assert fired["labels"]["playbook"] == "edge-node-lost"
    edge.cli("cluster", "restart", edge.name, "edge", timeout=150)  # the fix (docs/playbooks.md)
    restarted = time.time()  # the node's Ray was dead until now: no second before it can be back
    assert any(d["labels"]["node"] == "edge" for d in edge.write_targets())
    seconds = restarted - lost + edge.wait_healthy(restarted, timeout_s=120)
    edge.prom.wait_resolved("HarnessEdgeNodeLost", timeout_s=20, tier="edge")
    deadline = time.monotonic() + 30  # a proxy of the restarted node (a new worker) serves the load there
    while not [r for r in edge.prom.query('ray_serve_num_http_requests_total{tier="edge"} > 0')
               if r["metric"].get("WorkerId") not in before]:
        assert time.monotonic() < deadline, f"no new proxy serves on the restarted edge node (before: {before})"
        time.sleep(1.0)
    _, _, errors_after = edge.client_second(at=lost + seconds)
    print(f"RECOVERY edge-node-lost {seconds:.1f} s from the loss; {errors_after - errors_before:.0f} request(s) "
          f"failed meanwhile (refused, never accepted) at {RATE:g}/s")
