"""Targets on a real two-node cluster (the session's head, labelled tier=cloud, and a worker labelled tier=edge):
every cell runs on its target's node and its row says where; a target with no node fails its cells at once; a
worker node killed mid-sweep fails what it held (and what still waited for it), the rest finishes, and
`--resume` on a restarted node finishes the run without running anything twice; a node out of memory fails the
cell that ran out, with that reason, not the run."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, harness_cmd, needs_netns, ray_env, require

EDGE_PORTS = ("--dashboard-agent-listen-port=52366", "--dashboard-agent-grpc-port=52367", "--metrics-export-port=52368")

SCENARIO = """
name: targets
corpus: {{synthetic: {{seed: 3, rows: 600}}}}
detectors:  # Slow first: on the 1-CPU edge node it holds the CPU, and windowedGaussian@edge waits behind it
  - type: userdet:Slow
    params: {{seconds: 0.05, hold_file: "{hold}", pid_file: "{pid}", hold_where: HARNESS_TEST_NODE=edge}}
  - type: windowedGaussian
targets:
  cloud: {{labels: {{tier: cloud}}}}
  edge: {{labels: {{tier: edge}}, memory: 200MiB}}
  moon: {{labels: {{tier: moon}}}}
"""

def start_edge(cluster, *extra: str, env: dict[str, str] | None = None, wrapper: list[str] = ()) -> subprocess.Popen:
    return cluster.start_node(f"--address={cluster.gcs_address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                              "--labels=tier=edge", *EDGE_PORTS, *extra, env=env, wrapper=wrapper)


def run(cluster, scenario: Path, out: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return cluster.run(harness_cmd("run", str(scenario), "--out", str(out), "--address", cluster.gcs_address, *extra),
                       timeout=timeout, env={"PYTHONPATH": str(REPO / "tests"), "HARNESS_HISTORY": "off"})


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*/result.json"))}


@needs_netns
def test_targets_place_cells_and_a_lost_node_fails_only_its_cells_until_resumed(ray_cluster, tmp_path) -> None:
    hold, pid = tmp_path / "hold", tmp_path / "slow.pid"
    hold.touch()
    scenario = tmp_path / "targets.yaml"
    scenario.write_text(SCENARIO.format(hold=hold, pid=pid))
    out = tmp_path / "run"
    edge = start_edge(ray_cluster, env={"HARNESS_TEST_NODE": "edge"})
    try:
        proc = subprocess.Popen(ray_cluster.cmd(harness_cmd("run", str(scenario), "--out", str(out), "--address", ray_cluster.gcs_address)),
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ray_env(PYTHONPATH=str(REPO / "tests"), HARNESS_HISTORY="off"))
        deadline = time.monotonic() + 120
        while not pid.exists():  # the slow cell is holding on the edge node: kill the whole node under it
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        ray_cluster.stop_node(edge)  # SIGTERM then SIGKILL to the node's process group: raylet, workers, all
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if edge in ray_cluster.nodes:
            ray_cluster.stop_node(edge)
    assert proc.returncode == 1, stderr[-3000:]
    first = results(out)
    assert sorted(first) == sorted(f"{d}@{t}" for d in ("windowedGaussian", "Slow") for t in ("cloud", "edge", "moon")), stderr[-3000:]
    status = {cid: r["status"] for cid, r in first.items()}
    assert status["windowedGaussian@cloud"] == status["Slow@cloud"] == "ok"
    for cid in ("windowedGaussian@moon", "Slow@moon"):
        assert first[cid]["tasks"]["score"]["error"] == "target moon: no node of the cluster has the labels tier=moon"
    # the task on the lost node fails with Ray's NodeDiedError, or, when the runner sees the node gone before Ray
    # reports it, is cancelled with the reason below (a race under load; both say what happened)
    stranded = "a node left the cluster, and now target edge: no node of the cluster has the labels tier=edge"
    slow_error = first["Slow@edge"]["tasks"]["score"]["error"]
    assert status["Slow@edge"] == "failed" and (slow_error.startswith("NodeDiedError: ") or slow_error == stranded), slow_error
    # queued for a target that has no node left: cancelled with the reason, not left waiting forever
    assert first["windowedGaussian@edge"]["tasks"]["score"]["error"] == stranded
    for cid, r in first.items():  # every task ran where its target says
        node = r["tasks"]["score"].get("node")
        if r["status"] == "ok":
            assert node["labels"]["tier"] == cid.split("@")[1], (cid, node)
    table = pd.read_csv(out / "table.csv").set_index("cell")
    assert table.loc["Slow@cloud", "target"] == "cloud" and table.loc["Slow@edge", "status"] == "failed"
    assert table.loc["Slow@cloud", "hardware"].startswith("tier=cloud ")

    hold.unlink()
    edge = start_edge(ray_cluster, env={"HARNESS_TEST_NODE": "edge"})
    try:
        resumed = run(ray_cluster, scenario, out, "--resume")
    finally:
        ray_cluster.stop_node(edge)
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # the moon cells still fail
    second = results(out)
    assert sorted(second) == sorted(first)  # one result per cell: nothing lost, nothing twice
    for cid in ("windowedGaussian@cloud", "Slow@cloud"):  # finished cells were not run again
        assert second[cid]["tasks"]["score"]["started_at"] == first[cid]["tasks"]["score"]["started_at"]
    for cid in ("windowedGaussian@edge", "Slow@edge"):
        assert second[cid]["status"] == "ok" and second[cid]["tasks"]["score"]["node"]["labels"]["tier"] == "edge"
    table = pd.read_csv(out / "table.csv")
    assert len(table) == 6 and table["cell"].is_unique


@pytest.fixture
def memory_group():
    """A cgroup (v1 or v2, as mounted) limiting memory to 1.5 GiB for an edge node, removed afterwards."""
    from harness.topology import cgroups

    hierarchy = cgroups.hierarchy()
    require("memory" in hierarchy.available(), f"no cgroup memory controller under {cgroups.ROOT}")
    name = f"harness-test-{uuid.uuid4().hex[:8]}"
    cpus = os.cpu_count() or 1  # every core: no CPU limit that matters
    used = hierarchy.create(name, cpus, f"0-{cpus - 1}" if cpus > 1 else "0", int(1.5 * 2**30))
    yield name
    hierarchy.remove(name, used)


@needs_netns
def test_an_edge_node_out_of_memory_fails_the_cell_with_that_reason(ray_cluster, tmp_path, memory_group) -> None:
    scenario = tmp_path / "hog.yaml"
    scenario.write_text("""
name: hog
corpus: {synthetic: {seed: 3, rows: 600}}
detectors:
  - {type: windowedGaussian}
  - {type: "userdet:Hog", params: {megabytes: 3072}}
targets:
  edge: {labels: {tier: edge}}
""")
    # Ray's memory monitor acts at 80% of the node's memory (default 95%: a fast allocation can reach the kernel's
    # OOM killer first, and a worker it kills tells no reason)
    from harness.topology import cgroups

    wrapper, env = cgroups.wrapper(memory_group, ["memory"])  # the node's group shown where Ray looks for its limit
    edge = start_edge(ray_cluster, "--memory=1500000000", env={**env, "RAY_memory_usage_threshold": "0.8"}, wrapper=wrapper)
    try:
        proc = run(ray_cluster, scenario, tmp_path / "run")
    finally:
        ray_cluster.stop_node(edge)
    assert proc.returncode == 1, proc.stderr[-3000:]
    got = results(tmp_path / "run")
    assert got["windowedGaussian@edge"]["status"] == "ok"
    hog = got["Hog@edge"]["tasks"]["score"]
    assert hog["status"] == "failed" and "memory" in hog["error"].lower(), hog["error"]
    assert got["windowedGaussian@edge"]["tasks"]["score"]["node"]["memory_bytes"] == int(1.5 * 2**30)
