"""Placement: a task's `Needs` become Ray task options, and a running task says where it ran.

- CPUs and memory are Ray resources; node labels become a `label_selector`, so a task only runs on a node whose
  labels match (Ray >= 2.49; `ray start --labels tier=edge`).
- `exclusive` reserves every CPU of the largest matching node: Ray then starts the task only when nothing
  else runs there, and runs nothing beside it.
- A task no node can take (labels no node has, more CPUs than the largest matching node) is refused before it is
  submitted, with the reason: it would otherwise wait forever. Except on a cluster with an autoscaler
  (autoscaler v2, `autoscaler_running`): there a task whose labels no node has *yet* is submitted all the same, since its
  label selector and resources are the demand that makes the autoscaler start such a node (clusters/aws.yaml's
  edge type has `min_workers: 0`); the runner bounds that wait (HARNESS_TARGET_WAIT_S).
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


def wanted(needs: Needs) -> str:
    """The labels a task asks for, as `tier=edge, arch=aarch64`."""
    return ", ".join(f"{k}={v}" for k, v in sorted(needs.labels.items()))


def ray_options(needs: Needs, nodes: list[dict[str, Any]], may_scale: bool = False) -> dict[str, Any]:
    """Ray task options for `needs` on a cluster of `nodes`; Unplaceable when none of them can take it.
    `may_scale`: the cluster's autoscaler may start a node with the labels no node has yet, so such a task gets its
    options (its `exclusive` then reserves the CPUs it needs: the size of the node to come is not known)."""
    matching = matching_nodes(needs, nodes)
    if not matching and may_scale and needs.labels:
        return _options(needs, needs.cpus)
    if not matching:
        raise Unplaceable(f"no node of the cluster has the labels {wanted(needs)}")
    largest = max(n.get("Resources", {}).get("CPU", 0.0) for n in matching)
    cpus = largest if needs.exclusive else needs.cpus
    if needs.cpus > largest or cpus <= 0:
        where = " with those labels" if needs.labels else ""
        raise Unplaceable(f"needs {needs.cpus:g} CPUs on one node; the largest node{where} has {largest:g}")
    return _options(needs, cpus)


def _options(needs: Needs, cpus: float) -> dict[str, Any]:
    options: dict[str, Any] = {"num_cpus": cpus}
    if needs.memory_bytes:
        options["memory"] = needs.memory_bytes
    if needs.labels:
        options["label_selector"] = dict(needs.labels)
    return options


def autoscaler_running(gcs_address: str) -> bool:
    """Whether the cluster at `gcs_address` has an autoscaler that can act on a label selector: Ray's autoscaler
    v2 (`RAY_enable_autoscaler_v2=1` on the head), which reports its state to the GCS. v1, which every `ray start
    --head` runs (read-only without `--autoscaling-config`), sizes nodes by resources alone, so a task for a label no
    node has would wait in vain there: such a cluster, like a private Ray, fails it at once."""
    try:
        from ray._raylet import GcsClient
        from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

        reply = GetClusterStatusReply()
        reply.ParseFromString(GcsClient(gcs_address).get_cluster_status(timeout_s=10))
        return reply.autoscaling_state.autoscaler_state_version > 0
    except Exception:  # noqa: BLE001 - a GCS that cannot say has no autoscaler we can count on
        return False


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
