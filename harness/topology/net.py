"""The network of a local topology: a hub namespace with a bridge, each node's namespace joined to it by a veth
pair, and each link shaped: bandwidth with `tbf`; delay and jitter with `netem` where the kernel has it (else the
relay does it, harness.topology.relay). Every address is private, inside namespaces made here."""

from __future__ import annotations

import os
import subprocess

BRIDGE = "br0"
NODE_DEV = "eth0"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, check=check)


def namespaces() -> set[str]:
    return {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.strip()}


def add_namespace(ns: str) -> None:
    sh("ip", "netns", "add", ns)
    in_ns(ns, "ip", "link", "set", "lo", "up")


def delete_namespace(ns: str) -> None:
    """Kill what still runs in it, then delete it (its veth ends go with it)."""
    if ns not in namespaces():
        return
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        sh("kill", "-9", pid, check=False)
    sh("ip", "netns", "del", ns, check=False)


def netem_works() -> bool:
    """Whether this kernel has the netem qdisc (probed in a throwaway namespace)."""
    probe = f"harness-probe-{os.getpid()}"  # its own: two `up`s at once must not share it
    delete_namespace(probe)
    add_namespace(probe)
    try:
        return in_ns(probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False).returncode == 0
    finally:
        delete_namespace(probe)


def add_hub(hub: str) -> None:
    add_namespace(hub)
    in_ns(hub, "ip", "link", "add", BRIDGE, "type", "bridge")
    in_ns(hub, "ip", "link", "set", BRIDGE, "up")


def join(hub: str, ns: str, hub_dev: str, ip: str, prefix: int) -> None:
    """A veth pair: `eth0` (ip/prefix, default route) in the node's namespace, `hub_dev` on the hub's bridge. The
    default route points nowhere beyond the bridge; it lets Ray find the node's own address."""
    sh("ip", "link", "add", hub_dev, "netns", hub, "type", "veth", "peer", "name", NODE_DEV, "netns", ns)
    in_ns(hub, "ip", "link", "set", hub_dev, "master", BRIDGE)
    in_ns(hub, "ip", "link", "set", hub_dev, "up")
    in_ns(ns, "ip", "addr", "add", f"{ip}/{prefix}", "dev", NODE_DEV)
    in_ns(ns, "ip", "link", "set", NODE_DEV, "up")
    in_ns(ns, "ip", "route", "add", "default", "dev", NODE_DEV)


def shape(ns: str, dev: str, delay_ms: float, jitter_ms: float, rate_mbit: float | None, netem: bool) -> None:
    """Shape `dev`'s outgoing traffic: with netem, `delay_ms ± jitter_ms` (one direction's share) and the rate
    under it; without, the rate only (tbf)."""
    parent: list[str] = ["root"]
    if netem and (delay_ms or jitter_ms):
        delay = ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
        in_ns(ns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", *delay)
        parent = ["parent", "1:"]
    if rate_mbit:
        burst = max(int(rate_mbit * 1e6 / 8 / 250), 16_000)  # about 4 ms of data, at least 16 kB
        in_ns(ns, "tc", "qdisc", "add", "dev", dev, *parent, "handle", "2:", "tbf", "rate", f"{rate_mbit}mbit",
              "burst", str(burst), "latency", "100ms")
