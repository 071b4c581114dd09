"""The serving playbooks (docs/playbooks/serving.md), each proven on one private Ray cluster and one plain `harness
serve`, under load from inside the cluster's namespace (tests/chaos/serving_load.py: harness.load's open loop), with
a real Prometheus scraping Ray's metrics agent and evaluating clusters/monitoring/alerts/serving.yml:

- replica crash: the serving replica SIGKILLed under steady load; HarnessReplicaCrashed fires; Serve replaces it
  by itself; the alert resolves; the seconds until the load is back within the SLO are measured (the load task's
  own FaultFigures.recovery_s rule) and every event accounted for.
- overload: offered three times what the service carries; shed with 503 + Retry-After while the requests it admits
  keep their p95; HarnessServeOverloaded fires, and resolves once the rate is lowered.
- slow clients: connections that trickle their body (or head) a byte a second, beside a normal client; the front
  door cuts bodies and heads with 408 at 10 s; the normal client keeps its p95; HarnessSlowClients fires.

The service is `userdet:Busy` (4 ms of sleep per event: a known capacity, at no cost to the machine's cores) with
4 request slots and 4 queued at the front door, so overload takes 150 requests/s, not thousands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.chaos.prom import Prometheus
from tests.conftest import REPO, REQUIREMENTS, RayCluster, can_isolate, kill_stragglers, ray_env, require, stop_group

PORT = 8100
URL = f"http://127.0.0.1:{PORT}/v1/score"
APP = "scoring"  # harness serve's Serve application
SLO_MS = 250.0  # this service's p95 objective: 4 requests in service and 4 queued, 20 ms each, at worst
EVENTS = 5  # per request: 20 ms of the service's time; 4 slots batched together: about 50 requests/s
CRASH_RUN_S = 20  # the measured window of the crash test's load; the kill at 2 s
ENV = {"PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "RAY_metrics_report_interval_ms": "1000"}


class Service:
    """The cluster, `harness serve` on it, and Prometheus scraping it (all in one network namespace)."""

    def __init__(self, cluster: RayCluster, prom: Prometheus, workdir: Path):
        self.cluster, self.prom, self.workdir = cluster, prom, workdir

    def load(self, *args: str, timeout: float = 120) -> subprocess.Popen:
        """tests/chaos/serving_load.py in the namespace, in the background; `result(proc)` reads its JSON."""
        path = self.workdir / f"load-{uuid.uuid4().hex[:6]}.json"
        with open(path, "w") as out:
            proc = subprocess.Popen(self.cluster.cmd([sys.executable, "tests/chaos/serving_load.py", *args]), stdout=out,
                                    stderr=subprocess.PIPE, text=True, env=ray_env(**ENV), cwd=REPO)
        proc.output = path  # type: ignore[attr-defined]
        return proc

    @staticmethod
    def result(proc: subprocess.Popen, timeout: float = 120) -> dict:
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        return json.loads(proc.output.read_text())  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Long because it brings up and tears down the three real parts in order: a Ray head in its own namespace
    (reporting metrics every second instead of Ray's 10, so the test need not wait), `harness serve` of the Busy
    service, and Prometheus on Ray's service-discovery file."""
    require(can_isolate(), REQUIREMENTS["needs_netns"][1])
    work = tmp_path_factory.mktemp("serving-chaos")
    ns = f"chaos-serve-{uuid.uuid4().hex[:6]}"
    temp_dir = Path(f"/tmp/rayc-{uuid.uuid4().hex[:6]}")  # Ray's socket paths must stay short
    subprocess.run(["ip", "netns", "add", ns], check=True)
    cluster = RayCluster(ns, "127.0.0.1:6379", "http://127.0.0.1:8265", temp_dir)
    serve = None
    try:
        subprocess.run(cluster.cmd(["ip", "link", "set", "lo", "up"]), check=True)
        cluster.start_node("--head", "--port=6379", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
                           "--dashboard-port=8265", "--num-cpus=2", f"--temp-dir={temp_dir}",
                           env={"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "harness.serving.http_guard:middlewares", **ENV})
        scenario = work / "busy.yaml"
        scenario.write_text(f"name: chaos\ndetectors: [{{type: 'userdet:Busy', params: {{ms_per_event: 4.0}}}}]\n"
                            f"serve: {{max_ongoing_requests: 4, max_queued_requests: 4, max_batch_size: 4, retry_after_s: 1, port: {PORT}}}\n")
        log = work / "serve.log"
        with open(log, "w") as out:
            serve = subprocess.Popen(cluster.cmd([sys.executable, "-m", "harness", "serve", str(scenario), "--cell", "Busy",
                                                  "--address", cluster.gcs_address]),
                                     stdout=out, stderr=subprocess.STDOUT, env=ray_env(**ENV), cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + 120
        while f"at http://127.0.0.1:{PORT}" not in log.read_text():
            assert serve.poll() is None and time.monotonic() < deadline, f"harness serve did not come up:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        with Prometheus(work / "prom", cluster.cmd([]), file_sd={"ray": [str(temp_dir / "prom_metrics_service_discovery.json")]}) as prom:
            yield Service(cluster, prom, work)
    finally:
        if serve is not None:
            stop_group(serve)
        for proc in reversed(list(cluster.nodes)):
            cluster.stop_node(proc)
        kill_stragglers(str(temp_dir))
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _wait_series(prom: Prometheus, expr: str, timeout_s: float = 30) -> None:
    """Until `expr` has a result: Prometheus has scraped what the rules need."""
    deadline = time.monotonic() + timeout_s
    while not prom.query(expr):
        assert time.monotonic() < deadline, f"no series for {expr} in {timeout_s:g} s: {prom.targets_up()}"
        time.sleep(0.5)


def test_replica_crash_is_replaced_and_every_answered_event_counted_once(service: Service) -> None:
    """SIGKILL the replica under 10 requests/s: the playbook's signal, Serve's own fix, the recovery time, and the
    ledger: each stream's count on the new replica equals the events of the 200 answers after the kill."""
    from harness.load import LoadSummary
    from harness.tasks.load import _fault

    prom = service.prom
    # the replica's start must be older than the rule's 15 s horizon of "new", as a running service's is
    _wait_series(prom, f'ray_serve_deployment_replica_starts_total{{application="{APP}"}} offset 16s', timeout_s=60)
    proc = service.load("load", URL, "--rate", "10", "--duration", str(CRASH_RUN_S), "--kill-at", "2", "--events", str(EVENTS))
    fired = prom.wait_firing("HarnessReplicaCrashed", timeout_s=40, application=APP)
    out = service.result(proc)
    resolved_s = prom.wait_resolved("HarnessReplicaCrashed", timeout_s=30, application=APP)
    assert fired["labels"]["deployment"] == "ScoreIngress" and fired["labels"]["playbook"] == "replica-crash"
    summary = LoadSummary.model_validate(out["phases"][0])
    kill = out["kill"]
    fault = _fault(summary, {"deployment": "ScoreIngress"}, kill["at_s"], kill.get("killed_at"), SLO_MS)
    print(f"RECOVERY replica-crash {fault.recovery_s:.1f} s (errors {summary.errors} {summary.error_kinds}, "
          f"shed {summary.shed}; alert resolved {resolved_s:.1f} s after the load ended)")
    print("  per second (t scored/shed/errors p95):",
          ", ".join(f"{s.t} {s.rps}/{s.shed}/{s.errors} {s.p95_ms or 0:.0f}" for s in summary.per_second))
    # the kill cost something, and the load was back within the SLO (no errors, nothing shed) for the run's last 3 s
    assert fault.killed and 0 < fault.recovery_s <= CRASH_RUN_S - 2 - 3, (fault, summary.per_second)
    before, after = out["status_before"]["shards"][0], out["status_after"]["shards"][0]
    assert after["pid"] != before["pid"] and after["started_at"] > before["started_at"], (before, after)
    _account(out["ledger"], kill["killed_at"], after)


def _account(ledger: list[list], killed_at: float, after: dict) -> None:
    """Every event the new replica scored was answered 200 exactly once, and each stream restarted once. An answer
    is the new replica's when it came after half the restart: answers the old one sent just before the SIGKILL
    arrive a few ms after it, the new one's first answers seconds later (its first `started`)."""
    ok = [r for r in ledger if r[2] == 200]
    first_new = min(r[5] for r in ok if r[4] and r[5] > killed_at)
    assert first_new - killed_at > 1.0, (killed_at, first_new)  # a restart takes seconds: the halves are apart
    cut = (killed_at + first_new) / 2
    old, new = [r for r in ok if r[5] <= cut], [r for r in ok if r[5] > cut]
    streams = sorted({r[1] for r in ledger})
    lost = {}
    for s in streams:
        mine = [r for r in new if r[1] == s]
        assert sum(r[4] for r in mine) == 1, f"{s}: started {sum(r[4] for r in mine)} times after the kill"
        assert max(r[3] for r in mine) == sum(r[6] for r in mine), (s, mine)  # counted once each, none lost
        assert sum(r[4] for r in old if r[1] == s) <= 1, s  # started once before (or earlier still)
        lost[s] = max((r[3] for r in old if r[1] == s), default=0)
    assert after["events"] == sum(r[6] for r in new), (after, len(new))  # nothing scored that was not answered 200
    assert after["streams"] == len(streams)
    failed = [r for r in ledger if r[2] != 200]
    print(f"LEDGER replica-crash: {len(old)} answered 200 before the kill, {len(new)} after, each scored once; "
          f"{len(failed)} not accepted ({sorted({r[2] for r in failed})}), to resend; stream history lost with "
          f"the replica: {lost} events (re-warming)")


def test_overload_is_shed_and_resolves_when_the_rate_is_lowered(service: Service) -> None:
    """150 requests/s at a service that carries about 50: 503 + Retry-After for the surplus, the admitted within
    the SLO; then 10 requests/s (the playbook's fix: offer what it carries) and the alert resolves."""
    from harness.load import LoadSummary

    prom = service.prom
    proc = service.load("load", URL, "--rate", "150", "--duration", "6", "--then-rate", "10", "--then-duration", "30",
                        "--events", str(EVENTS))
    fired = prom.wait_firing("HarnessServeOverloaded", timeout_s=30, application=APP)
    started = time.monotonic()
    resolved_s = prom.wait_resolved("HarnessServeOverloaded", timeout_s=45, application=APP)
    out = service.result(proc)
    hot, fixed = (LoadSummary.model_validate(p) for p in out["phases"])
    print(f"RECOVERY overload {time.monotonic() - started:.1f} s from the alert to resolved (resolved_s {resolved_s:.1f}); "
          f"overloaded: {hot.requests} scored p95 {hot.latency_ms.p95} ms, {hot.shed} shed; fixed: p95 {fixed.latency_ms.p95} ms")
    assert fired["labels"]["target"] == "local" and fired["labels"]["playbook"] == "overload"
    assert hot.shed > hot.requests and hot.errors == 0, hot  # two thirds shed, nothing failed or timed out
    assert hot.latency_ms.p95 is not None and hot.latency_ms.p95 <= SLO_MS, hot.latency_ms
    assert fixed.shed == 0 and fixed.errors == 0 and fixed.latency_ms.p95 <= SLO_MS, fixed


def test_slow_clients_are_cut_and_others_keep_their_p95(service: Service) -> None:
    """48 clients trickling a body and 8 trickling their head, a byte a second, from 1 s into a 10 requests/s
    load: bodies and heads are answered 408 at 10 s, the normal requests keep the SLO, HarnessSlowClients fires."""
    from harness.load import LoadSummary

    prom = service.prom
    proc = service.load("slow", URL, "--rate", "10", "--duration", "13", "--bodies", "48", "--heads", "8",
                        "--start-at", "1", "--events", str(EVENTS))
    out = service.result(proc)
    normal = LoadSummary.model_validate(out["phases"][0])
    bodies, heads = out["side"][8:], out["side"][:8]
    print(f"SLOW slow-clients: bodies {sorted({b[0] for b in bodies})} after {min(b[2] for b in bodies):.1f}-"
          f"{max(b[2] for b in bodies):.1f} s; heads {sorted({h[0] for h in heads})}; normal p95 {normal.latency_ms.p95} ms")
    assert all(b[0] == "408" and 9.5 <= b[2] <= 12.5 for b in bodies), bodies
    assert all(h[0] == "408" and 9.5 <= h[2] <= 12.5 for h in heads), heads  # http_guard.HEAD_TIMEOUT_S
    assert normal.errors == 0 and normal.shed == 0 and normal.latency_ms.p95 <= SLO_MS, normal
    fired = prom.wait_firing("HarnessSlowClients", timeout_s=20, application=APP)  # its rate holds the 408s a minute
    assert fired["labels"]["playbook"] == "slow-clients"
