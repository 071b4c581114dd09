"""`harness cluster up / down / status / exec`: a Ray cluster of real `ray start` nodes on this machine, each in
its own network namespace, with labels, CPU and memory limits and shaped links (docs/topology.md).

Everything `up` makes is recorded in the state file as it is made, so `down` removes exactly that, and a failed
`up` removes what it made. Processes are stopped by their process group, never with `ray stop` (which would stop
every Ray on the machine).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

from harness.errors import InputError
from harness.topology import cgroups, net
from harness.topology.spec import Topology, load_topology
from harness.topology.state import NodeState, TopologyState, load_state, save_state, state_path

GCS_PORT = 6379
JOIN_TIMEOUT_S = 90


def _tag(name: str) -> str:
    return f"{zlib.crc32(name.encode()) & 0xFFFF:04x}"


def up(path: str | Path) -> TopologyState:
    """Build the topology of file `path`; on any failure, tear down what was made and raise."""
    topo = load_topology(path)
    if os.geteuid() != 0:
        raise InputError("needs root (network namespaces, tc, cgroups)", path)
    for tool in ("ip", "tc", "ray"):
        if shutil.which(tool) is None:
            raise InputError(f"needs `{tool}` on PATH", path)
    if state_path(topo.name).exists():
        raise InputError(f"topology {topo.name!r} is up already (harness cluster down {topo.name})", path)
    state = _plan(topo, Path(path))
    save_state(state)
    try:
        _build(topo, state)
    except BaseException:
        down(topo.name)
        raise
    return state


def _plan(topo: Topology, path: Path) -> TopologyState:
    tag = _tag(topo.name)
    hosts = list(ipaddress.ip_network(topo.subnet).hosts())
    order = [topo.head] + [n for n in topo.nodes if n != topo.head]
    nodes = []
    for i, name in enumerate(order):
        spec = topo.nodes[name]
        link = spec.link if (spec.link.delay_ms or spec.link.jitter_ms or spec.link.rate_mbit) else None
        nodes.append(NodeState(name=name, namespace=f"{topo.name}-{name}", ip=str(hosts[i + 1]), labels=spec.labels,
                               cpus=spec.cpus, cpuset=spec.cpuset, memory_bytes=spec.memory, link=link, head=spec.head,
                               client=name == topo.client, cgroup=f"harness-{topo.name}-{name}"))
    return TopologyState(
        name=topo.name, file=str(path.resolve()), method="netem" if net.netem_works() else "relay",
        hub=f"{topo.name}-hub", head_address=f"{nodes[0].ip}:{GCS_PORT}", auth=topo.auth,
        token=secrets.token_hex(32) if topo.auth == "token" else None, temp_root=f"/tmp/rt-{tag}",
        service_ports=list(topo.service_ports), nodes=nodes,
    )


def _build(topo: Topology, state: TopologyState) -> None:
    prefix = ipaddress.ip_network(topo.subnet).prefixlen
    net.add_hub(state.hub)
    for i, node in enumerate(state.nodes):
        net.add_namespace(node.namespace)
        hub_dev = f"h{_tag(topo.name)}n{i}"
        state.veths.append(hub_dev)
        save_state(state)
        net.join(state.hub, node.namespace, hub_dev, node.ip, prefix)
        link = node.link
        if link is not None:  # each direction: half the delay, the whole jitter's share, the rate
            for ns, dev in ((node.namespace, net.NODE_DEV), (state.hub, hub_dev)):
                net.shape(ns, dev, link.delay_ms / 2, link.jitter_ms / 2, link.rate_mbit, state.method == "netem")
        node.controllers = cgroups.create(node.cgroup, node.cpus, node.cpuset, node.memory_bytes)
        save_state(state)
    for node in state.nodes:  # the head first: the others join it
        node.pids.append(_start_ray(state, node).pid)
        save_state(state)
        for port in state.service_ports:
            node.pids.append(_start_relay(state, node, port).pid)
        save_state(state)


def _log(state: TopologyState, node: NodeState, what: str) -> Path:
    folder = Path(state.temp_root)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{node.name}-{what}.log"


def _start_ray(state: TopologyState, node: NodeState) -> subprocess.Popen:
    """`ray start --block` for `node`, in its namespace and cgroups; returns once the node runs."""
    labels = ",".join(f"{k}={v}" for k, v in node.labels.items())
    args = ["ray", "start", "--block", "--disable-usage-stats", f"--node-ip-address={node.ip}", f"--num-cpus={node.cpus:g}",
            f"--temp-dir={state.temp_root}/{node.name}"]
    args += [f"--labels={labels}"] if labels else []
    args += [f"--memory={node.memory_bytes}"] if node.memory_bytes else []
    if node.head:
        args += ["--head", f"--port={GCS_PORT}", "--include-dashboard=false"]
    else:
        args += [f"--address={state.head_address}"]
    prefix, extra = cgroups.wrapper(node.cgroup, node.controllers)
    env = {**os.environ, **state.environment(), **extra}
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")  # Serve's fast path, as a private local Ray has it
    if node.memory_bytes:  # Ray's monitor acts before the kernel's OOM killer, which would kill without a reason
        env["RAY_memory_usage_threshold"] = "0.8"
    log = _log(state, node, "ray")
    with open(log, "w") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", node.namespace, *prefix, *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"node {node.name} did not start: {log.read_text()[-1500:]}")
        time.sleep(0.2)
    return proc


def _start_relay(state: TopologyState, node: NodeState, port: int) -> subprocess.Popen:
    """node_ip:port → the node's own 127.0.0.1:port, delayed by the link when netem does not do it."""
    link = node.link if state.method == "relay" else None
    delay = ["--delay-ms", f"{link.delay_ms / 2:g}", "--jitter-ms", f"{link.jitter_ms / 2:g}"] if link else []
    cmd = [sys.executable, "-m", "harness.topology.relay", "--listen", f"{node.ip}:{port}", "--to", f"127.0.0.1:{port}", *delay]
    with open(_log(state, node, f"relay-{port}"), "w") as out:
        return subprocess.Popen(["ip", "netns", "exec", node.namespace, *cmd], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def resolve(name_or_file: str) -> TopologyState | None:
    """The state of a topology given by name or by its file; None if it is not up."""
    name = name_or_file
    if name_or_file.endswith((".yaml", ".yml")) or os.sep in name_or_file:
        name = load_topology(name_or_file).name
    path = state_path(name)
    return load_state(path) if path.exists() else None


def down(name_or_file: str) -> bool:
    """Stop every process, remove cgroups, links and namespaces, delete the state. False if nothing was up."""
    state = resolve(name_or_file)
    if state is None:
        return False
    for node in state.nodes:
        for pid in node.pids:
            _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for n in state.nodes for pid in n.pids):
        time.sleep(0.1)
    for node in state.nodes:
        for pid in node.pids:
            _signal_group(pid, signal.SIGKILL)
        for c in node.controllers:  # anything left in the node's groups (a worker that left its session)
            for pid in cgroups.pids(node.cgroup, c):
                _kill(pid)
    for node in state.nodes:
        net.delete_namespace(node.namespace)
    net.delete_namespace(state.hub)
    for node in state.nodes:
        cgroups.remove(node.cgroup, node.controllers)
    shutil.rmtree(state.temp_root, ignore_errors=True)
    state_path(state.name).unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def exec_in(name: str, cmd: list[str]) -> int:
    """Run `cmd` in the client node's namespace, joined to the cluster; its exit status."""
    state = resolve(name)
    if state is None:
        raise InputError(f"no topology {name!r} is up (harness cluster up FILE)", field="NAME")
    # HARNESS_NODE_IP: the node a driver started here must join (Ray would pick the head's raylet: every node's
    # processes are visible on this one host); `ray.init(_node_ip_address=...)` does the same for other drivers
    env = {**os.environ, **state.environment(), "HARNESS_TOPOLOGY": str(state_path(state.name)),
           "HARNESS_NODE_IP": state.client.ip}
    return subprocess.run(["ip", "netns", "exec", state.client.namespace, *cmd], env=env).returncode


def describe(state: TopologyState) -> list[str]:
    """One line per node: name, namespace, address, labels, CPUs, memory, link."""
    lines = []
    for n in state.nodes:
        role = "head" if n.head else ("client" if n.client else "worker")
        mem = f"{n.memory_bytes / 2**30:.1f} GiB" if n.memory_bytes else "no memory limit"
        link = "no shaping"
        if n.link is not None:
            rate = f", {n.link.rate_mbit:g} Mbit/s" if n.link.rate_mbit else ""
            link = f"{n.link.delay_ms:g} ms ± {n.link.jitter_ms:g} ms{rate} ({state.method})"
        labels = ",".join(f"{k}={v}" for k, v in n.labels.items()) or "-"
        lines.append(f"{n.name:<8} {role:<6} {n.namespace:<22} {n.ip:<14} {labels:<12} {n.cpus:g} CPU "
                     f"(cores {(n.cpuset or cgroups.last_cores(n.cpus)) if 'cpuset' in n.controllers else 'any'}), {mem}, {link}")
    return lines
