"""Placement: a task's `Needs` become Ray task options, and a running task says where it ran.

- CPUs and memory are Ray resources; node labels become a `label_selector`, so a task only runs on a node whose
  labels match (Ray >= 2.49; `ray start --labels tier=edge`).
- `exclusive` reserves every CPU of the largest matching node: Ray then starts the task only when nothing
  else runs there, and runs nothing beside it.
- A task no node can take (labels no node has, more CPUs than the largest matching node) is refused before it is
  submitted, with the reason: it would otherwise wait forever.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from harness.tasks.base import Needs


class Unplaceable(Exception):
    """No node of the cluster can run the task."""


def matching_nodes(needs: Needs, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alive nodes (as `ray.nodes()` lists them) whose labels include every label the task needs."""
    alive = [n for n in nodes if n.get("Alive")]
    return [n for n in alive if all(n.get("Labels", {}).get(k) == v for k, v in needs.labels.items())]


def ray_options(needs: Needs, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Ray task options for `needs` on a cluster of `nodes`; Unplaceable when none of them can take it."""
    matching = matching_nodes(needs, nodes)
    if not matching:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(needs.labels.items()))
        raise Unplaceable(f"no node of the cluster has the labels {wanted}")
    largest = max(n.get("Resources", {}).get("CPU", 0.0) for n in matching)
    cpus = largest if needs.exclusive else needs.cpus
    if needs.cpus > largest or cpus <= 0:
        where = " with those labels" if needs.labels else ""
        raise Unplaceable(f"needs {needs.cpus:g} CPUs on one node; the largest node{where} has {largest:g}")
    options: dict[str, Any] = {"num_cpus": cpus}
    if needs.memory_bytes:
        options["memory"] = needs.memory_bytes
    if needs.labels:
        options["label_selector"] = dict(needs.labels)
    return options


def node_facts() -> dict[str, Any]:
    """Where the calling Ray task runs: node id and labels, hostname, CPU model, cores, memory, architecture."""
    import ray

    from harness.environment import cpu_model

    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    labels = {k: str(v) for k, v in ctx.get_node_labels().items()}
    return {
        "node_id": node_id,
        "labels": labels,
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "ray_cpus": _node_cpus(node_id),
        "memory_bytes": usable_memory(),
        "arch": platform.machine(),
    }


def usable_cores() -> int:
    """Logical CPUs this process may run on (its affinity: a node limited to a cpuset sees its own)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 0


def usable_memory() -> int:
    """Bytes of memory this process may use: the machine's, or less under a cgroup memory limit (v1 or v2)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    limit = _cgroup_memory_limit()
    return int(min(memory, limit) if limit and memory else (limit or memory))


def _cgroup_memory_limit() -> int | None:
    """The tightest memory limit of this process's cgroup: at its own path in the hierarchy, or at the hierarchy's
    root as a container (or a node of `harness cluster up`, which mounts its cgroup there) shows it."""
    paths = ["/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"]
    try:
        for line in open("/proc/self/cgroup").read().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                paths.append(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
            elif controllers == "":
                paths.append(f"/sys/fs/cgroup{path}/memory.max")
    except (OSError, ValueError):
        pass
    limits = []
    for path in paths:
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 says "no limit" with a huge number, v2 with "max"
            limits.append(int(text))
    return min(limits) if limits else None


def _node_cpus(node_id: str) -> float | None:
    import ray

    for n in ray.nodes():
        if n.get("NodeID") == node_id:
            return float(n.get("Resources", {}).get("CPU", 0.0))
    return None
