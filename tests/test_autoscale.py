"""Targets on a cluster that scales: an edge node type with no node at first (min_workers: 0, as in
clusters/aws.yaml and gcp.yaml) gets one from the autoscaler when the first @edge cell asks for it, and a target no
node type can satisfy fails its cells with the reason once HARNESS_TARGET_WAIT_S has passed.

The cluster is Ray's own fake multi-node autoscaler (ray.autoscaler._private.fake_multi_node, what
`ray.cluster_utils.AutoscalingCluster` drives): its provider starts a real raylet for each node the autoscaler v2
launches. AutoscalingCluster itself cannot be used as is: its `start` and `shutdown` stop Ray by name, every Ray on
the machine, and the provider's example.yaml it reads is not in Ray's wheel; so the head is
started here, the same way, with the config written out in full, inside a private network namespace, and stopped by
process group."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from conftest import RayCluster, harness_cmd, kill_stragglers, needs_netns

FAKE_HEAD = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"  # the fake provider's head id

SCENARIO = """
name: autoscale
corpus: {synthetic: {seed: 3, rows: 500}}
detectors:
  - type: windowedGaussian
targets:
  cloud: {labels: {tier: cloud}}
  edge: {labels: {tier: edge}}
  moon: {labels: {tier: moon}}
"""


def autoscaling_config() -> dict:
    """The cluster: a 2-CPU head labelled tier=cloud, and an edge node type (1 CPU, tier=edge) with no node at first."""
    return {
        "cluster_name": "fake_multinode", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "provider": {"type": "external", "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                     "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True,
                     "launch_multiple": True, "head_node_id": FAKE_HEAD},
        "auth": {"ssh_user": "ubuntu"}, "docker": {}, "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "labels": {"tier": "cloud"}, "node_config": {}, "max_workers": 0},
            "edge": {"resources": {"CPU": 1}, "labels": {"tier": "edge"}, "node_config": {}, "min_workers": 0, "max_workers": 1},
        },
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@needs_netns
def test_an_edge_node_type_at_zero_nodes_is_scaled_up_and_a_target_without_one_fails_after_the_wait(tmp_path) -> None:
    import subprocess
    import uuid

    ns, temp_dir = f"harness-as-{uuid.uuid4().hex[:6]}", Path(f"/tmp/rayas-{uuid.uuid4().hex[:6]}")
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(autoscaling_config()))
    scenario = tmp_path / "autoscale.yaml"
    scenario.write_text(SCENARIO)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    cluster = RayCluster(ns, "127.0.0.1:6379", "", temp_dir)
    try:
        subprocess.run(cluster.cmd(["ip", "link", "set", "lo", "up"]), check=True)
        cluster.start_node(
            "--head", "--port=6379", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--labels=tier=cloud",
            "--include-dashboard=false", f"--temp-dir={temp_dir}", f"--autoscaling-config={config}",
            env={"AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1", "RAY_enable_autoscaler_v2": "1",
                 "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD},
        )
        started = time.monotonic()
        proc = cluster.run(harness_cmd("run", str(scenario), "--out", str(tmp_path / "run"), "--address", cluster.gcs_address),
                           timeout=120, env={"HARNESS_HISTORY": "off", "HARNESS_TARGET_WAIT_S": "20"})
        took = time.monotonic() - started
    finally:
        for node in reversed(list(cluster.nodes)):
            cluster.stop_node(node)
        kill_stragglers(str(temp_dir))  # the fake provider's nodes run under the head's temp dir
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the moon cell fails; the others finish
    cells = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*/result.json")}
    for target in ("cloud", "edge"):
        cell = cells[f"windowedGaussian@{target}"]
        assert cell["status"] == "ok", cell
        assert cell["tasks"]["score"]["node"]["labels"]["tier"] == target
    moon = cells["windowedGaussian@moon"]["tasks"]["score"]["error"]
    assert moon.startswith("target moon: no node with the labels tier=moon came up within 20 s"), moon
    # the figure, when the run logged it (a node the autoscaler had already begun for an earlier request is not)
    up = re.search(r"target tier=edge: a node came up ([0-9.]+) s after", proc.stderr)
    print(f"edge node up {float(up.group(1)):.1f} s after the first @edge cell asked; " if up else "", f"whole run {took:.1f} s")
