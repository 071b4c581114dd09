"""The processes of a topology's nodes: `ray start --block` in the node's namespace and cgroups, and the relay for
each service port; each in its own session, so it is stopped by its process group (never with `ray stop`, which
would stop every Ray on the machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.topology import cgroups
from harness.topology.state import NodeState, TopologyState

GCS_PORT = 6379
METRICS_EXPORT_PORT = 8080  # every node's metrics agent (Ray's, Serve's and the service's metrics), on its own address
JOIN_TIMEOUT_S = 90
STARTED = "Ray runtime started"  # `ray start` prints it once the node is registered with the GCS: it has joined


class NodeFailed(RuntimeError):
    """A node's process did not start; the message is one line."""


def log_path(state: TopologyState, node: NodeState, what: str) -> Path:
    folder = Path(state.temp_root)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{node.name}-{what}.log"


def start_ray(state: TopologyState, node: NodeState) -> subprocess.Popen:
    """`ray start --block` for `node`, in its namespace, put into its cgroups before it execs (so every Ray process
    of the node inherits them). Returns at once: `wait_started` waits for it."""
    labels = ",".join(f"{k}={v}" for k, v in node.labels.items())
    args = ["ray", "start", "--block", "--disable-usage-stats", f"--node-ip-address={node.ip}", f"--num-cpus={node.cpus:g}",
            f"--temp-dir={state.temp_root}/{node.name}", f"--metrics-export-port={METRICS_EXPORT_PORT}"]
    args += [f"--labels={labels}"] if labels else []
    args += [f"--memory={node.memory_bytes}"] if node.memory_bytes else []
    if node.head:  # the dashboard, on the head namespace's loopback only: its reporter module writes Prometheus'
        # service-discovery file (<temp dir>/prom_metrics_service_discovery.json, every node's metrics agent)
        args += ["--head", f"--port={GCS_PORT}", "--include-dashboard=true", "--dashboard-host=127.0.0.1"]
    else:
        args += [f"--address={state.head_address}"]
    prefix, extra = cgroups.wrapper(node.cgroup, node.controllers)
    env = {**os.environ, **state.environment(), **extra}
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")  # Serve's fast path, as a private local Ray has it,
    # but with a proxy on every node: that path's "direct ingress" runs the proxy on the head only, and a service
    # on the edge would then have nothing on the edge's 127.0.0.1:8000 for its relay to reach
    env.setdefault("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0")
    from harness.serving.http_guard import IMPORT_PATH

    env.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", IMPORT_PATH)  # bodies read whole, bounded
    if node.memory_bytes:  # Ray's monitor acts before the kernel's OOM killer, which would kill without a reason
        env["RAY_memory_usage_threshold"] = "0.8"
    with open(log_path(state, node, "ray"), "w") as out:
        return subprocess.Popen(["ip", "netns", "exec", node.namespace, *prefix, *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_started(state: TopologyState, started: list[tuple[NodeState, subprocess.Popen]]) -> None:
    """Until every node says it runs (registered with the GCS); NodeFailed (one line) if one exits or times out."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    waiting = list(started)
    while waiting:
        for node, proc in list(waiting):
            log = log_path(state, node, "ray")
            if STARTED in log.read_text(errors="replace"):
                waiting.remove((node, proc))
            elif proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited with status {proc.returncode}" if proc.returncode is not None else f"not up after {JOIN_TIMEOUT_S} s"
                raise NodeFailed(f"node {node.name}: `ray start` {why}: {last_line(log)}")
        time.sleep(0.1)


def last_line(log: Path) -> str:
    """The log's last line that says something (Ray's own error, usually)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def start_relay(state: TopologyState, node: NodeState, port: int) -> subprocess.Popen:
    """node_ip:port → the node's own 127.0.0.1:port, delayed by the link when netem does not do it."""
    link = node.link if state.method == "relay" else None
    delay = ["--delay-ms", f"{link.delay_ms / 2:g}", "--jitter-ms", f"{link.jitter_ms / 2:g}"] if link else []
    cmd = [sys.executable, "-m", "harness.topology.relay", "--listen", f"{node.ip}:{port}", "--to", f"127.0.0.1:{port}", *delay]
    with open(log_path(state, node, f"relay-{port}"), "w") as out:
        return subprocess.Popen(["ip", "netns", "exec", node.namespace, *cmd], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_relays(state: TopologyState, relays: list[tuple[NodeState, int, subprocess.Popen]], timeout_s: float = 30) -> None:
    """Until every relay listens (it says so once it does); NodeFailed (one line) if one exits or times out."""
    deadline = time.monotonic() + timeout_s
    for node, port, proc in relays:
        log = log_path(state, node, f"relay-{port}")
        while not log.read_text(errors="replace").startswith("relay "):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise NodeFailed(f"node {node.name}: the relay on {node.ip}:{port} did not start: {last_line(log)}")
            time.sleep(0.05)


def stop(groups: list[int], grace_s: float) -> None:
    """SIGTERM to each process group, up to `grace_s` for them to end, then SIGKILL."""
    for pid in groups:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(pid) for pid in groups):
        time.sleep(0.05)
    for pid in groups:
        _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (a zombie, which `up`'s own children become until it reaps
    them, does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False
