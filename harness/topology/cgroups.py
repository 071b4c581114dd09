"""Per-node CPU and memory limits with cgroups, v1 or v2, whichever hierarchy the machine mounts.

A process inside `ip netns exec` sees a fresh sysfs where /sys/fs/cgroup is empty, so a node joins its group from
inside, through the hierarchy's wrapper: it mounts the hierarchy, moves itself into the node's group, and mounts
that group where a container would show its own (v1: `/sys/fs/cgroup/<controller>`, v2: `/sys/fs/cgroup`). Ray's
memory monitor then reads the node's limit there, and so does `harness.execution.placement.usable_memory`.

`V1` and `V2` have the same methods; `hierarchy()` picks the one mounted (v2 has cgroup.controllers at its root).
The module-level functions are the mounted hierarchy's.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpuset", "cpu", "memory")
PERIOD_US = 100_000

# $GROUP: the node's group; $CONTROLLERS: the hierarchies it is limited in; then exec the rest of the arguments
WRAPPER_V1 = r"""set -e
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

# v2: one hierarchy; the node's group is mounted over the whole, as a container's cgroup namespace would show it
WRAPPER_V2 = r"""set -e
if [ -n "$CONTROLLERS" ]; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  echo $$ > "/sys/fs/cgroup/$GROUP/cgroup.procs"
  mount --bind "/sys/fs/cgroup/$GROUP" /sys/fs/cgroup
fi
exec "$@"
"""


@dataclass(frozen=True)
class Limits:
    """What a node's group enforces, read back from the hierarchy (None: not limited there)."""

    cpuset: str | None
    cpu_quota: float | None  # cores
    memory_bytes: int | None


def last_cores(cpus: float) -> str:
    """The last ceil(cpus) cores of the machine, as a cpuset list."""
    n = os.cpu_count() or 1
    k = min(max(1, int(-(-cpus // 1))), n)
    return f"{n - k}-{n - 1}" if k > 1 else str(n - 1)


def _needs_quota(cpus: float, have_cpuset: bool) -> bool:
    """A fraction of a core (or no cpuset to pin whole cores) needs a CPU quota."""
    return float(cpus) != int(cpus) or not have_cpuset


def _rmdir(path: Path) -> None:
    """Remove a group; a few tries while the kernel lets go of its last processes."""
    for _ in range(50):
        if not path.exists():
            return
        try:
            path.rmdir()
        except OSError:
            time.sleep(0.1)


def _read_ints(path: Path) -> list[int]:
    try:
        return [int(x) for x in path.read_text().split()]
    except OSError:
        return []


class V1:
    """cgroup v1: one hierarchy per controller, at ROOT/<controller>, with the node's group in each."""

    version = 1
    wrapper_script = WRAPPER_V1

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root

    def available(self) -> list[str]:
        return [c for c in CONTROLLERS if (self.root / c / "tasks").is_file()]

    def create(self, group: str, cpus: float, cpuset: str | None, memory_bytes: int | None) -> list[str]:
        """The node's groups; returns the controllers it is limited in."""
        have = self.available()
        used = []
        if "cpuset" in have:
            path = self._mkdir("cpuset", group)
            (path / "cpuset.mems").write_text((self.root / "cpuset" / "cpuset.mems").read_text())
            (path / "cpuset.cpus").write_text(cpuset or last_cores(cpus))
            used.append("cpuset")
        if "cpu" in have and _needs_quota(cpus, "cpuset" in have):
            path = self._mkdir("cpu", group)
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(int(cpus * PERIOD_US)))
            used.append("cpu")
        if memory_bytes and "memory" in have:
            (self._mkdir("memory", group) / "memory.limit_in_bytes").write_text(str(memory_bytes))
            used.append("memory")
        return used

    def _mkdir(self, controller: str, group: str) -> Path:
        path = self.root / controller / group
        path.mkdir(exist_ok=True)
        return path

    def limits(self, group: str) -> Limits:
        def read(controller: str, name: str) -> str | None:
            path = self.root / controller / group / name
            return path.read_text().strip() if path.is_file() else None

        quota, period = read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us")
        memory = read("memory", "memory.limit_in_bytes")
        return Limits(cpuset=read("cpuset", "cpuset.cpus"),
                      cpu_quota=int(quota) / int(period) if quota and period and int(quota) > 0 else None,
                      memory_bytes=int(memory) if memory else None)

    def existing(self, group: str) -> list[str]:
        """The node's groups that exist already, as controller/group."""
        return [f"{c}/{group}" for c in CONTROLLERS if (self.root / c / group).exists()]

    def remove(self, group: str, controllers: list[str]) -> None:
        """Remove the node's groups (their processes must be gone)."""
        for c in controllers:
            _rmdir(self.root / c / group)

    def pids(self, group: str, controller: str) -> list[int]:
        return _read_ints(self.root / controller / group / "tasks")

    def set_cpu_quota(self, group: str, cores: float | None, controllers: list[str]) -> list[str]:
        """Change the node's CPU quota live (None: no quota). A node made without one (whole cores, pinned) gets
        its group in the `cpu` hierarchy now, and every process of its other groups is moved into it (twice: a
        process forked during the first pass); their children inherit it. Returns the controllers it is
        limited in."""
        if "cpu" not in self.available():
            raise OSError(f"no cpu controller under {self.root}")
        path = self._mkdir("cpu", group)
        (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (path / "cpu.cfs_quota_us").write_text(str(int(cores * PERIOD_US)) if cores else "-1")
        if "cpu" in controllers:
            return list(controllers)
        for _ in range(2):
            for c in controllers:
                for pid in _read_ints(self.root / c / group / "cgroup.procs"):
                    try:
                        (path / "cgroup.procs").write_text(str(pid))
                    except OSError:  # gone meanwhile
                        pass
        return [*controllers, "cpu"]


class V2:
    """cgroup v2: one unified hierarchy at ROOT; the node's group is ROOT/<group>, its controllers enabled in the
    root's cgroup.subtree_control (the root is exempt from v2's no-internal-processes rule)."""

    version = 2
    wrapper_script = WRAPPER_V2

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root

    def available(self) -> list[str]:
        try:
            offered = set((self.root / "cgroup.controllers").read_text().split())
        except OSError:
            return []
        return [c for c in CONTROLLERS if c in offered]

    def create(self, group: str, cpus: float, cpuset: str | None, memory_bytes: int | None) -> list[str]:
        """The node's group with its limits; returns the controllers it is limited in."""
        have = self.available()
        used = [c for c in have if c != "cpu" or _needs_quota(cpus, "cpuset" in have)]
        used = [c for c in used if c != "memory" or memory_bytes]
        if not used:
            return []
        (self.root / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in used))  # one write
        path = self.root / group
        path.mkdir(exist_ok=True)
        if "cpuset" in used:  # cpuset.mems left empty: the parent's memory nodes
            (path / "cpuset.cpus").write_text(cpuset or last_cores(cpus))
        if "cpu" in used:
            (path / "cpu.max").write_text(f"{int(cpus * PERIOD_US)} {PERIOD_US}")
        if "memory" in used:
            (path / "memory.max").write_text(str(memory_bytes))
        return used

    def limits(self, group: str) -> Limits:
        def read(name: str) -> str | None:
            path = self.root / group / name
            return path.read_text().strip() if path.is_file() else None

        quota, period = (read("cpu.max") or f"max {PERIOD_US}").split()
        memory = read("memory.max") or "max"
        return Limits(cpuset=read("cpuset.cpus") or None,
                      cpu_quota=int(quota) / int(period) if quota != "max" else None,
                      memory_bytes=int(memory) if memory != "max" else None)

    def existing(self, group: str) -> list[str]:
        return [group] if (self.root / group).exists() else []

    def remove(self, group: str, controllers: list[str]) -> None:
        """Remove the node's group (its processes must be gone); the root's subtree_control is left as it was
        made: other groups may rely on it."""
        if controllers:
            _rmdir(self.root / group)

    def pids(self, group: str, controller: str) -> list[int]:
        """Every process of the group (one group for all controllers)."""
        return _read_ints(self.root / group / "cgroup.procs")

    def set_cpu_quota(self, group: str, cores: float | None, controllers: list[str]) -> list[str]:
        """Change the node's CPU quota live (None: no quota), enabling the `cpu` controller for it if it was made
        without one (its processes are in the group already). Returns the controllers it is limited in."""
        if "cpu" not in self.available():
            raise OSError(f"no cpu controller under {self.root}")
        if "cpu" not in controllers:
            (self.root / "cgroup.subtree_control").write_text("+cpu")
        (self.root / group / "cpu.max").write_text(f"{int(cores * PERIOD_US)} {PERIOD_US}" if cores else f"max {PERIOD_US}")
        return list(controllers) if "cpu" in controllers else [*controllers, "cpu"]


def detect(root: Path = ROOT) -> V1 | V2:
    """The hierarchy mounted at `root`: v2 (unified) has cgroup.controllers there; else v1 (or hybrid, whose
    controllers are all v1)."""
    return V2(root) if (root / "cgroup.controllers").is_file() else V1(root)


@functools.cache
def hierarchy() -> V1 | V2:
    return detect(ROOT)


def wrapper(group: str | None, controllers: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command prefix (inside the namespace) that puts what follows into `group`, and its environment."""
    return ["sh", "-c", hierarchy().wrapper_script, "sh"], {"GROUP": group or "", "CONTROLLERS": " ".join(controllers)}


def available() -> list[str]:
    return hierarchy().available()


def create(group: str, cpus: float, cpuset: str | None, memory_bytes: int | None) -> list[str]:
    return hierarchy().create(group, cpus, cpuset, memory_bytes)


def remove(group: str, controllers: list[str]) -> None:
    hierarchy().remove(group, controllers)


def pids(group: str, controller: str) -> list[int]:
    return hierarchy().pids(group, controller)


def existing(group: str) -> list[str]:
    return hierarchy().existing(group)


def limits(group: str) -> Limits:
    return hierarchy().limits(group)


def set_cpu_quota(group: str, cores: float | None, controllers: list[str]) -> list[str]:
    return hierarchy().set_cpu_quota(group, cores, controllers)
