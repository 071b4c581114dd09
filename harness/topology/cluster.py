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
import subprocess
import zlib
from pathlib import Path

from harness.errors import InputError
from harness.topology import cgroups, net, nodes
from harness.topology.nodes import GCS_PORT
from harness.topology.spec import Topology, load_topology
from harness.topology.state import NodeState, TopologyState, load_state, save_state, state_path


class UpFailed(RuntimeError):
    """`up` failed and removed what it had made; the message is one line."""


def _tag(name: str) -> str:
    return f"{zlib.crc32(name.encode()) & 0xFFFF:04x}"


def up(path: str | Path) -> TopologyState:
    """Build the topology of file `path` and return once every node has joined. On any failure, tear down what
    was made and raise UpFailed (one line); on Ctrl-C, tear down and re-raise."""
    topo = load_topology(path)
    if os.geteuid() != 0:
        raise InputError("needs root (network namespaces, tc, cgroups)", path)
    for tool in ("ip", "tc", "ray"):
        if shutil.which(tool) is None:
            raise InputError(f"needs `{tool}` on PATH", path)
    if state_path(topo.name).exists():
        raise InputError(f"topology {topo.name!r} is up already (harness cluster down {topo.name})", path)
    state = _plan(topo, Path(path))
    taken = sorted(({n.namespace for n in state.nodes} | {state.hub}) & net.namespaces())
    taken += [group for n in state.nodes for group in cgroups.existing(n.cgroup)]
    taken += [state.temp_root] if Path(state.temp_root).exists() else []
    if taken:  # never adopt (nor later delete) what this command did not make
        raise InputError(f"{', '.join(taken)} exist(s) already: left by another program, or by an `up` killed "
                         f"outright (remove them by hand)", path, "name")
    save_state(state)
    try:
        _build(topo, state)
    except KeyboardInterrupt:
        down(topo.name)
        raise
    except Exception as exc:
        kept = _keep_logs(state)
        down(topo.name)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UpFailed(f"cluster up {topo.name} failed, and removed what it had made: {why}"
                       + (f" (logs: {kept})" if kept else "")) from exc
    return state


def _delays(method: str, ports: list[int]) -> str:
    if method == "netem":
        return ("netem on both ends of each shaped veth (half the delay and jitter each way): every packet of the "
                f"link, Ray's own traffic included; the relays on {ports} only forward")
    return (f"the relay: TCP to the service ports {ports} only (node_ip:port -> the node's 127.0.0.1:port), half the "
            "delay and jitter each way; Ray's own traffic between nodes is not delayed (tbf limits its bandwidth)")


def _plan(topo: Topology, path: Path) -> TopologyState:
    tag = _tag(topo.name)
    hosts = list(ipaddress.ip_network(topo.subnet).hosts())
    order = [topo.head] + [n for n in topo.nodes if n != topo.head]
    planned = []
    for i, name in enumerate(order):
        spec = topo.nodes[name]
        link = spec.link if (spec.link.delay_ms or spec.link.jitter_ms or spec.link.rate_mbit) else None
        planned.append(NodeState(name=name, namespace=f"{topo.name}-{name}", ip=str(hosts[i + 1]), labels=spec.labels,
                               cpus=spec.cpus, cpuset=spec.cpuset, memory_bytes=spec.memory, link=link, head=spec.head,
                               client=name == topo.client, cgroup=f"harness-{topo.name}-{name}"))
    method = "netem" if net.netem_works() else "relay"
    return TopologyState(
        name=topo.name, file=str(path.resolve()), method=method, delays=_delays(method, list(topo.service_ports)),
        hub=f"{topo.name}-hub", head_address=f"{planned[0].ip}:{GCS_PORT}", auth=topo.auth,
        token=secrets.token_hex(32) if topo.auth == "token" else None, temp_root=f"/tmp/rt-{tag}",
        service_ports=list(topo.service_ports), nodes=planned,
    )


def _build(topo: Topology, state: TopologyState) -> None:
    """Each step is recorded in the state file before it is taken, so `down` finds it even if `up` dies."""
    prefix = ipaddress.ip_network(topo.subnet).prefixlen
    net.add_hub(state.hub)
    for i, node in enumerate(state.nodes):
        net.add_namespace(node.namespace)
        hub_dev = f"h{_tag(topo.name)}n{i}"
        state.veths.append(hub_dev)
        node.controllers = [c for c in cgroups.CONTROLLERS if c in cgroups.available()]  # may be made: down looks
        save_state(state)
        net.join(state.hub, node.namespace, hub_dev, node.ip, prefix)
        link = node.link
        if link is not None:  # each direction: half the delay, half the jitter, the rate
            for ns, dev in ((node.namespace, net.NODE_DEV), (state.hub, hub_dev)):
                net.shape(ns, dev, link.delay_ms / 2, link.jitter_ms / 2, link.rate_mbit, state.method == "netem")
        node.controllers = cgroups.create(node.cgroup, node.cpus, node.cpuset, node.memory_bytes)
        save_state(state)
    head, workers = state.nodes[0], state.nodes[1:]
    for group in ([head], workers):  # the head first; then the workers together, each joining it
        started = []
        for node in group:
            proc = nodes.start_ray(state, node)
            node.pids.append(proc.pid)
            save_state(state)
            started.append((node, proc))
        nodes.wait_started(state, started)
    relays = []
    for node in state.nodes:
        for port in state.service_ports:
            proc = nodes.start_relay(state, node, port)
            node.pids.append(proc.pid)
            relays.append((node, port, proc))
        save_state(state)
    nodes.wait_relays(state, relays)


def _keep_logs(state: TopologyState) -> Path | None:
    """The logs of a failed `up`, copied beside the state file before `down` removes the temp dir."""
    logs = sorted(Path(state.temp_root).glob("*.log"))
    if not logs:
        return None
    kept = state_path(state.name).with_suffix(".up-failed.log")
    kept.write_text("".join(f"==> {log.name}\n{log.read_text(errors='replace')[-20000:]}\n" for log in logs))
    return kept


def resolve(name_or_file: str) -> TopologyState | None:
    """The state of a topology given by name or by its file; None if it is not up."""
    name = name_or_file
    if name_or_file.endswith((".yaml", ".yml")) or os.sep in name_or_file:
        name = load_topology(name_or_file).name
    path = state_path(name)
    return load_state(path) if path.exists() else None


def down(name_or_file: str) -> bool:
    """Stop every process, remove cgroups, links and namespaces, delete the state. False if nothing was up.

    The workers are stopped first (their raylets leave a live GCS within ~2 s), then the head (whose GCS and
    raylet take over 10 s to end on SIGTERM: it gets a short grace, then SIGKILL; nothing of it is kept)."""
    state = resolve(name_or_file)
    if state is None:
        return False
    nodes.stop([pid for n in state.nodes if not n.head for pid in n.pids], grace_s=5.0)
    nodes.stop([pid for n in state.nodes if n.head for pid in n.pids], grace_s=2.0)
    for node in state.nodes:
        for c in node.controllers:  # anything left in the node's groups (a Ray worker runs in its own session)
            for pid in cgroups.pids(node.cgroup, c):
                nodes.kill(pid)
    for node in state.nodes:  # and anything left in its namespace; the veths go with the namespaces
        net.delete_namespace(node.namespace)
    net.delete_namespace(state.hub)
    for node in state.nodes:
        cgroups.remove(node.cgroup, node.controllers)
    shutil.rmtree(state.temp_root, ignore_errors=True)
    state_path(state.name).unlink(missing_ok=True)
    return True


def up_state(name: str) -> TopologyState:
    """The state of topology `name` (or of its file), which must be up; one InputError line otherwise."""
    state = resolve(name)
    if state is None:
        raise InputError(f"no topology {name!r} is up (harness cluster up FILE)", field="NAME")
    return state


def _node(name: str, node_name: str) -> tuple[TopologyState, NodeState]:
    """The topology that is up and its node `node_name`; one InputError line otherwise."""
    state = up_state(name)
    node = next((n for n in state.nodes if n.name == node_name), None)
    if node is None:
        raise InputError(f"topology {state.name} has no node {node_name!r} (its nodes: "
                         f"{', '.join(n.name for n in state.nodes)})", field="NODE")
    return state, node


def restart(name: str, node_name: str) -> NodeState:
    """Bring a worker node's Ray back, as a host that rebooted would: stop what is left of its `ray start` process
    group and of its cgroups (a node lost to SIGKILL or the OOM killer may leave workers behind), then start it
    again in the same namespace and groups, with the same address and labels, and wait until it has joined. Its
    relays and links are kept. Ray sees a new node (a new node id): what ran there (Serve's replicas) is placed
    on it again by its owner. The head cannot be restarted so (its GCS holds the cluster's state): `down`, `up`."""
    state, node = _node(name, node_name)
    if node.head:
        raise InputError(f"{node.name} is the head: its GCS holds the cluster, restarting it loses every node's "
                         f"registration (harness cluster down {state.name}; harness cluster up FILE)", field="NODE")
    nodes.stop(node.pids[:1], grace_s=5.0)  # pids[0]: its `ray start`; the relays (the rest) stay
    for c in node.controllers:
        for pid in cgroups.pids(node.cgroup, c):
            nodes.kill(pid)
    proc = nodes.start_ray(state, node)
    node.pids[:1] = [proc.pid]
    save_state(state)
    nodes.wait_started(state, [(node, proc)])
    return node


def set_cpus(name: str, node_name: str, cores: float | None) -> NodeState:
    """Change a node's CPU quota live (None: lift it): the kernel's share, not what Ray offers (`--num-cpus` stays),
    as a noisy neighbour or a tightened container limit would. Recorded so `down` removes a group made for it."""
    state, node = _node(name, node_name)
    if cores is not None and not 0.01 <= cores <= (os.cpu_count() or 1):
        raise InputError(f"expected 0.01 to {os.cpu_count()} cores, got {cores:g}", field="--cpus")
    if "cpu" not in cgroups.available():
        raise InputError("this machine has no cpu cgroup controller: the quota cannot be set", field="--cpus")
    before = list(node.controllers)
    if "cpu" not in before:  # recorded before the group is made, as `up` does: `down` removes it whatever happens
        node.controllers = [*before, "cpu"]
        save_state(state)
    cgroups.set_cpu_quota(node.cgroup, cores, before)
    return node


def exec_in(name: str, cmd: list[str]) -> int:
    """Run `cmd` in the client node's namespace, joined to the cluster; its exit status."""
    state = up_state(name)
    # HARNESS_NODE_IP: the node a driver started here must join (Ray would pick the head's raylet: every node's
    # processes are visible on this one host); `ray.init(_node_ip_address=...)` does the same for other drivers
    env = {**os.environ, **state.environment(), "HARNESS_TOPOLOGY": str(state_path(state.name)),
           "HARNESS_NODE_IP": state.client.ip}
    return subprocess.run(["ip", "netns", "exec", state.client.namespace, *cmd], env=env, check=False).returncode


def describe(state: TopologyState) -> list[str]:
    """One line per node: name, namespace, address, labels, CPUs, memory, link."""
    lines = []
    width = max(len(n.namespace) for n in state.nodes)
    for n in state.nodes:
        role = "head" if n.head else ("client" if n.client else "worker")
        mem = f"{n.memory_bytes / 2**30:.1f} GiB" if n.memory_bytes else "no memory limit"
        if n.memory_bytes and "memory" not in n.controllers:  # no memory controller here
            mem += " (Ray's share only, not enforced)"
        link = "no shaping"
        if n.link is not None:
            rate = f", {n.link.rate_mbit:g} Mbit/s" if n.link.rate_mbit else ""
            link = f"{n.link.delay_ms:g} ms ± {n.link.jitter_ms:g} ms{rate} ({state.method})"
        quota = cgroups.limits(n.cgroup).cpu_quota if "cpu" in n.controllers and n.cgroup else None
        quota_text = f", quota {quota:g} CPU" if quota is not None and quota < n.cpus else ""
        labels = ",".join(f"{k}={v}" for k, v in n.labels.items()) or "-"
        lines.append(f"{n.name:<8} {role:<6} {n.namespace:<{width}} {n.ip:<14} {labels:<12} {n.cpus:g} CPU "
                     f"(cores {(n.cpuset or cgroups.last_cores(n.cpus)) if 'cpuset' in n.controllers else 'any'}{quota_text}), {mem}, {link}")
    return lines
