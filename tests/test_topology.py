"""The local cloud + edge topology: its file checked like a scenario, the delaying relay on its own, and one real
`harness cluster up` of clusters/local-cloud-edge.yaml (under a test name): nodes joined with their labels and
limits, the edge's delay seen from the client and the cloud's not, and `down` leaving nothing behind."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import REPO, harness, needs_netns, one_error_line

from harness.topology import relay

EXAMPLE = REPO / "clusters" / "local-cloud-edge.yaml"


@pytest.mark.parametrize("change, expect", [
    ({"nodes": {"a": {"labels": {"tier": "cloud"}}}}, "exactly one node with head: true"),
    ({"subnet": "8.8.8.0/24"}, "subnet"),
    ({"nodes": {"cloud": {"head": True, "cpus": "two"}}}, "nodes.cloud.cpus"),
    ({"nodes": {"cloud": {"head": True, "link": {"delay_ms": -1}}}}, "nodes.cloud.link.delay_ms"),
    ({"colour": "red"}, "colour"),
])
def test_a_bad_topology_is_one_line_exit_2(change: dict, expect: str, tmp_path: Path, cli_env) -> None:
    data = {**yaml.safe_load(EXAMPLE.read_text()), **change}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    line = one_error_line(harness(cli_env, "cluster", "up", path))
    assert str(path) in line and expect in line, line


def test_the_relay_delays_each_direction_and_keeps_the_bytes_in_order() -> None:
    async def scenario() -> tuple[float, bytes, bytes]:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # a 40 ms link: 20 ms each way; then with jitter, which must never reorder the bytes
        steady = await relay.serve(("127.0.0.1", 0), ("127.0.0.1", port), delay_ms=20, jitter_ms=0)
        jittery = await relay.serve(("127.0.0.1", 0), ("127.0.0.1", port), delay_ms=20, jitter_ms=15, seed=1)
        r, w = await asyncio.open_connection(*steady.sockets[0].getsockname()[:2])
        rtts = []
        for _ in range(3):
            t0 = time.perf_counter()
            w.write(b"x")
            await w.drain()
            assert await r.readexactly(1) == b"x"
            rtts.append(time.perf_counter() - t0)
        w.close()
        r, w = await asyncio.open_connection(*jittery.sockets[0].getsockname()[:2])
        payload = os.urandom(1 << 20)
        for i in range(0, len(payload), 4096):  # many chunks, each delayed at random: back whole and in order
            w.write(payload[i:i + 4096])
            await w.drain()
        w.write_eof()
        back = await r.read(-1)
        w.close()
        for s in (steady, jittery, server):
            s.close()
        return min(rtts), back, payload

    rtt, got, sent = asyncio.run(scenario())
    assert rtt >= 0.040, rtt
    assert len(got) == len(sent) and got == sent


@pytest.mark.parametrize("args, expect", [
    (("cluster", "restart", "nosuch", "edge"), "no topology 'nosuch' is up"),
    (("cluster", "limit", "nosuch", "edge", "--cpus", "0.5"), "no topology 'nosuch' is up"),
    (("cluster", "limit", "nosuch", "edge", "--cpus", "-1"), "expected a number of cores"),
    (("cluster", "targets", "nosuch"), "no topology 'nosuch' is up"),
])
def test_restart_limit_and_targets_refuse_bad_input_in_one_line(args: tuple, expect: str, tmp_path: Path, cli_env) -> None:
    line = one_error_line(harness({**cli_env, "HARNESS_STATE_DIR": str(tmp_path)}, *args))
    assert expect in line, line


def test_restart_and_limit_name_a_node_of_the_topology_and_never_the_head(tmp_path: Path, cli_env) -> None:
    """Against a state file (nothing runs): an unknown node is named with the topology's nodes; the head is refused."""
    from harness.topology import Link, NodeState, TopologyState

    state = TopologyState(name="t", file="t.yaml", method="relay", hub="t-hub", head_address="10.9.0.2:6379",
                          auth="token", temp_root=str(tmp_path / "rt"), service_ports=[8000],
                          nodes=[NodeState(name="cloud", namespace="t-cloud", ip="10.9.0.2", labels={"tier": "cloud"}, cpus=2, head=True),
                                 NodeState(name="edge", namespace="t-edge", ip="10.9.0.3", labels={"tier": "edge"}, cpus=1,
                                           link=Link(delay_ms=40))])
    (tmp_path / "t.json").write_text(state.model_dump_json())
    env = {**cli_env, "HARNESS_STATE_DIR": str(tmp_path)}
    assert "has no node 'moon' (its nodes: cloud, edge)" in one_error_line(harness(env, "cluster", "restart", "t", "moon"))
    assert "cloud is the head" in one_error_line(harness(env, "cluster", "restart", "t", "cloud"))
    # the metrics targets: each node's newest port file, labelled; a node with none yet is left out
    session = tmp_path / "rt" / "edge" / "session_latest"
    session.mkdir(parents=True)
    (session / "metrics_export_port_old").write_text("40001")
    os.utime(session / "metrics_export_port_old", (1, 1))
    (session / "metrics_export_port_new").write_text("40777")
    shown = harness(env, "cluster", "targets", "t")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == [{"targets": ["10.9.0.3:40777"], "labels": {"topology": "t", "node": "edge", "tier": "edge"}}]


@needs_netns
def test_a_failed_up_removes_what_it_made_and_says_why_in_one_line(tmp_path: Path) -> None:
    name = f"f{uuid.uuid4().hex[:6]}"
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(name=name, subnet="10.232.8.0/24")
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ray").write_text("#!/bin/sh\necho 'fake ray: no GCS today' >&2\nexit 3\n")
    (fake / "ray").chmod(0o755)
    env = {**os.environ, "HARNESS_STATE_DIR": str(tmp_path / "state"), "PATH": f"{fake}:{os.environ['PATH']}"}
    try:
        proc = cli(env, "cluster", "up", str(path))
    finally:
        subprocess.run([sys.executable, "-m", "harness", "cluster", "down", name], env=env, capture_output=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "node cloud" in lines[0] and "fake ray: no GCS today" in lines[0] and "removed what it had made" in lines[0], lines[0]
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    from harness.topology import cgroups

    assert not [*cgroups.ROOT.glob(f"*/harness-{name}-*"), *cgroups.ROOT.glob(f"harness-{name}-*")]  # v1, v2
    assert not (tmp_path / "state" / f"{name}.json").exists()
    assert "fake ray" in (tmp_path / "state" / f"{name}.up-failed.log").read_text()


@pytest.fixture
def topology(tmp_path: Path):
    """The example topology under a test-unique name and subnet; always taken down."""
    name = f"t{uuid.uuid4().hex[:6]}"
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(name=name, subnet="10.232.7.0/24")
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "HARNESS_STATE_DIR": str(tmp_path / "state")}
    yield name, path, env
    subprocess.run([sys.executable, "-m", "harness", "cluster", "down", name], env=env, capture_output=True, timeout=120, check=False)


def cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)


PROBE = """
import json, socket, time, ray
ray.init(address="auto", logging_level="ERROR")
nodes = {n["Labels"].get("tier"): {"ip": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU")} for n in ray.nodes() if n["Alive"]}
def rtt(ip):
    best = 1e9
    for _ in range(5):
        s = socket.create_connection((ip, 8000), timeout=5)
        t0 = time.perf_counter(); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.recv(1); best = min(best, time.perf_counter() - t0); s.close()
    return best
print(json.dumps({"nodes": nodes, "rtt": {t: rtt(n["ip"]) for t, n in nodes.items() if t in ("cloud", "edge")}}))
"""


@needs_netns
def test_up_builds_the_topology_and_down_removes_all_of_it(topology) -> None:
    from harness.topology import cgroups, load_state

    name, path, env = topology
    up = cli(env, "cluster", "up", str(path))
    assert up.returncode == 0, up.stderr[-3000:]
    assert "delayed by" in up.stdout and f"harness cluster exec {name} -- harness run" in up.stdout, up.stdout
    state_file = Path(env["HARNESS_STATE_DIR"]) / f"{name}.json"
    state = load_state(state_file)
    assert oct(state_file.stat().st_mode & 0o777) == "0o600" and state.auth == "token" and state.token
    edge = next(n for n in state.nodes if n.name == "edge")
    # a web server on each node's loopback, where Serve's proxy would listen: reached through the node's relay
    servers = [subprocess.Popen(["ip", "netns", "exec", n.namespace, sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in state.nodes if n.name in ("cloud", "edge")]
    try:
        time.sleep(1.0)
        probe = cli(env, "cluster", "exec", name, "--", sys.executable, "-c", PROBE)
    finally:
        for s in servers:
            s.kill()
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert sorted(seen["nodes"]) == ["client", "cloud", "edge"]
    assert seen["nodes"]["edge"] == {"ip": edge.ip, "cpus": 1.0}
    assert seen["rtt"]["edge"] >= 0.035 and seen["rtt"]["cloud"] < 0.02, seen["rtt"]  # 40 +- 5 ms away, and near
    # the edge node's limits, and its raylet inside them
    limits = cgroups.limits(edge.cgroup)
    assert limits.cpuset == "1" and limits.memory_bytes == 2**30, limits
    raylets = [p for p in psutil.process_iter(["cmdline"]) if "raylet" in " ".join(p.info["cmdline"] or []) and state.temp_root in " ".join(p.info["cmdline"] or [])]
    for controller in ("cpuset", "memory"):
        members = set(cgroups.pids(edge.cgroup, controller))
        assert any(p.pid in members for p in raylets), f"the edge raylet is not in the edge's {controller} cgroup"
    # Serve's proxy on every node, where the node's relay reaches it: its fast path's "direct ingress" (a proxy on
    # the head only) would leave a service on the edge unreachable at edge_ip:8000
    edge_raylet = next(p for p in raylets if p.pid in set(cgroups.pids(edge.cgroup, "memory")))
    environ = Path(f"/proc/{edge_raylet.pid}/environ").read_bytes().split(b"\0")
    assert b"RAY_SERVE_ENABLE_DIRECT_INGRESS=0" in environ and b"RAY_AUTH_MODE=token" in environ
    status = cli(env, "cluster", "status", name)
    assert status.returncode == 0 and "40 ms ± 5 ms, 100 Mbit/s" in status.stdout, status.stdout
    assert f"delayed by {state.delays}" in status.stdout and state.method in ("netem", "relay")

    down = cli(env, "cluster", "down", name)
    assert down.returncode == 0, down.stderr
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert name not in namespaces
    assert not [g for n in state.nodes for g in cgroups.existing(n.cgroup)]
    assert not state_file.exists() and not Path(state.temp_root).exists()
    assert not [p for p in psutil.process_iter(["cmdline"]) if state.temp_root in " ".join(p.info["cmdline"] or [])]
    assert cli(env, "cluster", "down", name).stdout.strip().endswith("nothing was up")  # idempotent


def test_a_load_test_records_the_shaping_toward_its_service(tmp_path, monkeypatch) -> None:
    """What `harness cluster exec` hands a run (HARNESS_TOPOLOGY) becomes the `network` beside its load figures."""
    from harness.serving.deploy import network_to
    from harness.results.schema import NetworkFigures
    from harness.topology import Link, NodeState, TopologyState

    def node(name: str, ip: str, link: Link | None) -> NodeState:
        return NodeState(name=name, namespace=f"t-{name}", ip=ip, labels={"tier": name}, cpus=1, link=link)

    state = TopologyState(name="t", file="t.yaml", method="relay", hub="t-hub", head_address="10.9.0.2:6379", auth="token",
                          temp_root="/tmp/rt-x", service_ports=[8000],
                          nodes=[node("cloud", "10.9.0.2", None), node("edge", "10.9.0.3", Link(delay_ms=40, jitter_ms=5, rate_mbit=100))])
    (tmp_path / "t.json").write_text(state.model_dump_json())
    monkeypatch.setenv("HARNESS_TOPOLOGY", str(tmp_path / "t.json"))
    edge = NetworkFigures(**network_to("10.9.0.3"))
    assert edge.describe() == "edge: 40 ms ± 5 ms, 100 Mbit/s (relay)"
    assert NetworkFigures(**network_to("10.9.0.2")).describe() == "cloud: no shaping"
    assert NetworkFigures(**network_to("127.0.0.1")).method == "none"
    monkeypatch.delenv("HARNESS_TOPOLOGY")
    assert network_to("10.9.0.3") is None  # any other cluster: nothing to record
