"""`harness cluster`'s cgroups, v1 and v2: each class's file writes against a temporary folder standing in for the
cgroup root (exactly which files get which values), hierarchy detection, and the v2 wrapper joining a real
cgroup2 group (this machine mounts v2 beside v1, in hybrid mode; a v2-only machine at /sys/fs/cgroup)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import require

from harness.topology import cgroups
from harness.topology.cgroups import V1, V2, Limits, detect

pytestmark = pytest.mark.timeout(60)  # file writes and one short subprocess

GROUP = "harness-t-edge"


def files(root: Path) -> dict[str, str]:
    """Every file under `root` with its text."""
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def v2_root(tmp_path: Path, offered: str = "cpuset cpu io memory pids") -> Path:
    (tmp_path / "cgroup.controllers").write_text(offered + "\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    return tmp_path


def v1_root(tmp_path: Path) -> Path:
    for c in cgroups.CONTROLLERS:
        (tmp_path / c).mkdir()
        (tmp_path / c / "tasks").write_text("")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    return tmp_path


def test_detect_reads_which_hierarchy_is_mounted(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    assert type(detect(v1_root(tmp_path / "v1"))) is V1
    assert type(detect(v2_root(tmp_path / "v2"))) is V2
    assert detect(tmp_path / "v2").root == tmp_path / "v2"


def test_v2_whole_cores_pin_a_cpuset_and_limit_memory(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    before = files(root)
    used = V2(root).create(GROUP, 1, "1", 3 * 2**30)
    assert used == ["cpuset", "memory"]  # whole cores: pinned, no quota
    assert files(root) == {**before, "cgroup.subtree_control": "+cpuset +memory",
                           f"{GROUP}/cpuset.cpus": "1", f"{GROUP}/memory.max": "3221225472"}
    assert V2(root).limits(GROUP) == Limits(cpuset="1", cpu_quota=None, memory_bytes=3 * 2**30)


def test_v2_a_fraction_of_a_core_is_a_quota_on_the_last_cores(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    used = V2(root).create(GROUP, 0.5, None, None)
    last = str((os.cpu_count() or 1) - 1)
    assert used == ["cpuset", "cpu"]
    assert files(root)["cgroup.subtree_control"] == "+cpuset +cpu"
    assert files(root / GROUP) == {"cpuset.cpus": last, "cpu.max": "50000 100000"}
    assert V2(root).limits(GROUP) == Limits(cpuset=last, cpu_quota=0.5, memory_bytes=None)


def test_v2_without_cpuset_whole_cores_are_a_quota_too(tmp_path: Path) -> None:
    root = v2_root(tmp_path, "cpu memory")
    assert V2(root).create(GROUP, 2, None, 512 * 2**20) == ["cpu", "memory"]
    assert files(root / GROUP) == {"cpu.max": "200000 100000", "memory.max": "536870912"}


def test_v2_nothing_offered_makes_no_group(tmp_path: Path) -> None:
    root = v2_root(tmp_path, "io pids")
    assert V2(root).available() == []
    assert V2(root).create(GROUP, 1, None, 2**30) == []
    assert files(root) == {"cgroup.controllers": "io pids\n", "cgroup.subtree_control": ""}
    assert V2(root).existing(GROUP) == []


def test_v2_pids_existing_and_remove_use_the_one_group(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    (root / GROUP).mkdir()
    (root / GROUP / "cgroup.procs").write_text("12\n34\n")
    v2 = V2(root)
    assert v2.existing(GROUP) == [GROUP]
    assert v2.pids(GROUP, "memory") == v2.pids(GROUP, "cpuset") == [12, 34]
    (root / GROUP / "cgroup.procs").unlink()  # a real group's files go with it: rmdir of the folder
    v2.remove(GROUP, ["cpuset", "memory"])
    assert not (root / GROUP).exists() and v2.pids(GROUP, "memory") == []


def test_v1_writes_each_controllers_group(tmp_path: Path) -> None:
    root = v1_root(tmp_path)
    before = files(root)
    assert V1(root).create(GROUP, 1.5, "0-1", 2**30) == ["cpuset", "cpu", "memory"]
    assert files(root) == {**before, f"cpuset/{GROUP}/cpuset.mems": "0\n", f"cpuset/{GROUP}/cpuset.cpus": "0-1",
                           f"cpu/{GROUP}/cpu.cfs_period_us": "100000", f"cpu/{GROUP}/cpu.cfs_quota_us": "150000",
                           f"memory/{GROUP}/memory.limit_in_bytes": "1073741824"}
    assert V1(root).limits(GROUP) == Limits(cpuset="0-1", cpu_quota=1.5, memory_bytes=2**30)
    assert V1(root).existing(GROUP) == [f"{c}/{GROUP}" for c in ("cpuset", "cpu", "memory")]


def test_v1_a_quota_set_live_moves_a_pinned_node_into_a_cpu_group_and_lifts_again(tmp_path: Path) -> None:
    """`harness cluster limit`: a node made with whole cores (cpuset only) gets a cpu group and its processes."""
    root = v1_root(tmp_path)
    v1 = V1(root)
    assert v1.create(GROUP, 1, "1", 2**30) == ["cpuset", "memory"]
    for c in ("cpuset", "memory"):
        (root / c / GROUP / "cgroup.procs").write_text("12\n34\n")
    assert v1.set_cpu_quota(GROUP, 0.1, ["cpuset", "memory"]) == ["cpuset", "memory", "cpu"]
    assert files(root / "cpu" / GROUP) == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "10000",
                                           "cgroup.procs": "34"}  # each pid written in turn (the kernel appends)
    assert v1.limits(GROUP).cpu_quota == 0.1
    assert v1.set_cpu_quota(GROUP, None, ["cpuset", "memory", "cpu"]) == ["cpuset", "memory", "cpu"]
    assert (root / "cpu" / GROUP / "cpu.cfs_quota_us").read_text() == "-1" and v1.limits(GROUP).cpu_quota is None


def test_v2_a_quota_set_live_enables_the_cpu_controller(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    v2 = V2(root)
    assert v2.create(GROUP, 1, "1", 2**30) == ["cpuset", "memory"]
    assert v2.set_cpu_quota(GROUP, 0.25, ["cpuset", "memory"]) == ["cpuset", "memory", "cpu"]
    assert files(root)["cgroup.subtree_control"] == "+cpu"
    assert files(root / GROUP)["cpu.max"] == "25000 100000" and v2.limits(GROUP).cpu_quota == 0.25
    v2.set_cpu_quota(GROUP, None, ["cpuset", "memory", "cpu"])
    assert files(root / GROUP)["cpu.max"] == "max 100000" and v2.limits(GROUP).cpu_quota is None


def test_a_quota_needs_the_cpu_controller(tmp_path: Path) -> None:
    root = v2_root(tmp_path, "cpuset memory")
    with pytest.raises(OSError, match="no cpu controller"):
        V2(root).set_cpu_quota(GROUP, 0.5, ["cpuset"])


def test_last_cores() -> None:
    n = os.cpu_count() or 1
    assert cgroups.last_cores(1) == str(n - 1)
    assert cgroups.last_cores(0.25) == str(n - 1)
    assert cgroups.last_cores(10 * n) == (f"0-{n - 1}" if n > 1 else "0")


def unified_root() -> Path | None:
    """A real cgroup2 mount: the root on a v2 host, /sys/fs/cgroup/unified on a hybrid one."""
    for root in (cgroups.ROOT, cgroups.ROOT / "unified"):
        if (root / "cgroup.procs").is_file() and (root / "cgroup.controllers").is_file():
            return root
    return None


def test_the_v2_wrapper_joins_the_group_and_shows_it_as_the_root() -> None:
    root = unified_root()
    require(os.geteuid() == 0 and shutil.which("unshare") is not None and root is not None,
            "needs root, unshare and a cgroup2 mount (/sys/fs/cgroup or /sys/fs/cgroup/unified)")
    group = f"harness-test-{uuid.uuid4().hex[:8]}"
    (root / group).mkdir()
    try:
        env = {**os.environ, "GROUP": group, "CONTROLLERS": "memory"}
        # in its own mount namespace, as `ip netns exec` gives: the mounts stay there
        out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cgroups.WRAPPER_V2, "sh",
                              "sh", "-c", "cat /proc/$$/cgroup; echo SELF $$; echo PROCS $(cat /sys/fs/cgroup/cgroup.procs)"],
                             env=env, capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        assert f"0::/{group}" in out.stdout.splitlines(), out.stdout
        me = out.stdout.split("SELF")[1].split()[0]
        assert me in out.stdout.split("PROCS")[1].split(), out.stdout  # the group's own processes, at the root
    finally:
        cgroups._rmdir(root / group)
    assert not (root / group).exists()
