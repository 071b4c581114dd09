"""Per-node CPU and memory limits with cgroup v1 (cpuset, cpu, memory), as this machine's kernel has them.

A process inside `ip netns exec` sees a fresh sysfs where /sys/fs/cgroup is empty, so a node joins its groups from
inside, through `WRAPPER`: it mounts each hierarchy, moves itself into the node's group, and mounts that group
where a container would show its own (`/sys/fs/cgroup/<controller>`). Ray's memory monitor then reads the node's
limit there, and so does `harness.execution.placement.usable_memory`.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpuset", "cpu", "memory")
PERIOD_US = 100_000

# $GROUP: the node's group; $CONTROLLERS: the hierarchies it is limited in; then exec the rest of the arguments
WRAPPER = r"""set -e
if [ -n "$CONTROLLERS" ]; then
  mount -t tmpfs cgroups /sys/fs/cgroup
  for c in $CONTROLLERS; do
    mkdir -p "/sys/fs/cgroup/$c" "/sys/fs/cgroup/.all-$c"
    mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/.all-$c"
    echo $$ > "/sys/fs/cgroup/.all-$c/$GROUP/tasks"
    mount --bind "/sys/fs/cgroup/.all-$c/$GROUP" "/sys/fs/cgroup/$c"
    umount -l "/sys/fs/cgroup/.all-$c"
  done
fi
exec "$@"
"""


def wrapper(group: str | None, controllers: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command prefix (inside the namespace) that puts what follows into `group`, and its environment."""
    return ["sh", "-c", WRAPPER, "sh"], {"GROUP": group or "", "CONTROLLERS": " ".join(controllers)}


def available() -> list[str]:
    return [c for c in CONTROLLERS if (ROOT / c / "tasks").is_file()]


def last_cores(cpus: float) -> str:
    """The last ceil(cpus) cores of the machine, as a cpuset list."""
    n = os.cpu_count() or 1
    k = min(max(1, int(-(-cpus // 1))), n)
    return f"{n - k}-{n - 1}" if k > 1 else str(n - 1)


def create(group: str, cpus: float, cpuset: str | None, memory_bytes: int | None) -> list[str]:
    """The node's groups; returns the controllers it is limited in."""
    have = available()
    used = []
    if "cpuset" in have:
        path = ROOT / "cpuset" / group
        path.mkdir(exist_ok=True)
        (path / "cpuset.mems").write_text((ROOT / "cpuset" / "cpuset.mems").read_text())
        (path / "cpuset.cpus").write_text(cpuset or last_cores(cpus))
        used.append("cpuset")
    if "cpu" in have and (float(cpus) != int(cpus) or "cpuset" not in have):  # a fraction of a core: a quota
        path = ROOT / "cpu" / group
        path.mkdir(exist_ok=True)
        (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (path / "cpu.cfs_quota_us").write_text(str(int(cpus * PERIOD_US)))
        used.append("cpu")
    if memory_bytes and "memory" in have:
        path = ROOT / "memory" / group
        path.mkdir(exist_ok=True)
        (path / "memory.limit_in_bytes").write_text(str(memory_bytes))
        used.append("memory")
    return used


def remove(group: str, controllers: list[str]) -> None:
    """Remove the node's groups (their processes must be gone; a few tries while the kernel lets go of them)."""
    import time

    for c in controllers:
        path = ROOT / c / group
        for _ in range(50):
            if not path.exists():
                break
            try:
                path.rmdir()
            except OSError:
                time.sleep(0.1)


def pids(group: str, controller: str) -> list[int]:
    try:
        return [int(x) for x in (ROOT / controller / group / "tasks").read_text().split()]
    except OSError:
        return []
