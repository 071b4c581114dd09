"""Placement: needs become Ray options (pure), and on a real two-node cluster (the session's head, labelled
tier=cloud, plus a worker node labelled tier=edge) a task asking for tier=edge runs there and records where it
ran; one asking for labels no node has fails at once with the reason; exclusive use reserves the whole node; a
running task's progress reaches the driver file by file."""

from __future__ import annotations

import json
import sys

import pytest

from harness.execution.placement import Unplaceable, ray_options
from harness.tasks import Needs

from conftest import REPO, needs_netns

NODES = [
    {"NodeID": "a", "Alive": True, "Resources": {"CPU": 2.0}, "Labels": {"tier": "cloud"}},
    {"NodeID": "b", "Alive": True, "Resources": {"CPU": 1.0}, "Labels": {"tier": "edge", "arch": "arm64"}},
    {"NodeID": "c", "Alive": False, "Resources": {"CPU": 64.0}, "Labels": {"tier": "edge"}},
]


def test_needs_become_ray_options() -> None:
    assert ray_options(Needs(), NODES) == {"num_cpus": 1.0}
    assert ray_options(Needs(cpus=2, memory_bytes=1 << 30), NODES) == {"num_cpus": 2, "memory": 1 << 30}
    assert ray_options(Needs(labels={"tier": "edge"}), NODES) == {"num_cpus": 1.0, "label_selector": {"tier": "edge"}}
    # exclusive: every CPU of the largest node that matches (a dead node does not count)
    assert ray_options(Needs(exclusive=True), NODES)["num_cpus"] == 2.0
    assert ray_options(Needs(exclusive=True, labels={"tier": "edge"}), NODES)["num_cpus"] == 1.0


@pytest.mark.parametrize(
    "needs, reason",
    [
        (Needs(labels={"tier": "moon"}), "no node of the cluster has the labels tier=moon"),
        (Needs(cpus=4), "needs 4 CPUs on one node; the largest node has 2"),
        (Needs(cpus=2, labels={"tier": "edge"}), "needs 2 CPUs on one node; the largest node with those labels has 1"),
    ],
)
def test_a_task_no_node_can_take_is_refused_with_the_reason(needs: Needs, reason: str) -> None:
    with pytest.raises(Unplaceable, match=reason):
        ray_options(needs, NODES)


PROBE = r"""
import json, sys
from harness.corpus.layout import load_corpus
from harness.corpus.synthetic import write_corpus
from harness.execution.runner import RayRunner
from harness.scenario import Cell
from harness.scoring.profiles import load_profiles
from harness.tasks import Needs, RunContext, Task

corpus = load_corpus(write_corpus(sys.argv[2], 1, 500))
def cell(name):
    return Cell(id=name, detector="null", type="null", params={}, axes={})


tasks = [
    Task("score", cell("edge"), Needs(labels={"tier": "edge"})),
    Task("score", cell("edge-alone"), Needs(labels={"tier": "edge"}, exclusive=True)),
    Task("score", cell("cloud"), Needs(labels={"tier": "cloud"})),
    Task("score", cell("moon"), Needs(labels={"tier": "moon"})),
    Task("timing", cell("moon"), Needs(), after=("score",)),
]
slow = Cell(id="slow", detector="slow", type="userdet:Slow", params={"seconds": 0.3}, axes={})
context = RunContext(corpus, load_profiles(None), None, 0.15)
with RayRunner(sys.argv[1], code=[sys.argv[3]]) as runner:
    nodes = {n["node_id"]: n["labels"].get("tier") for n in runner.describe()["node_list"]}
    done = {f.task.id: f.record.model_dump(mode="json") for f in runner.run(tasks, context)}
    progress = []
    done.update({f.task.id: f.record.model_dump(mode="json") for f in runner.run([Task("score", slow, Needs(), units=13)], context, on_progress=progress.append)})
print(json.dumps({"nodes": nodes, "done": done, "progress": progress}))
"""


@needs_netns
def test_tasks_run_where_their_labels_say_and_record_it(ray_cluster, tmp_path) -> None:
    edge = ray_cluster.start_node(
        f"--address={ray_cluster.gcs_address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--labels=tier=edge",
        "--dashboard-agent-listen-port=52366", "--dashboard-agent-grpc-port=52367", "--metrics-export-port=52368",
    )
    try:
        proc = ray_cluster.run(
            [sys.executable, "-c", PROBE, ray_cluster.gcs_address, str(tmp_path / "corpus"), str(REPO / "tests" / "userdet")],
            timeout=240, env={"PYTHONPATH": str(REPO / "tests")},
        )
    finally:
        ray_cluster.stop_node(edge)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    tier_of = out["nodes"]
    done = out["done"]
    assert sorted(tier_of.values()) == ["cloud", "edge"]
    for task, tier in (("edge/score", "edge"), ("edge-alone/score", "edge"), ("cloud/score", "cloud")):
        record = done[task]
        assert record["status"] == "ok", record
        node = record["node"]
        assert tier_of[node["node_id"]] == tier and node["labels"]["tier"] == tier, (task, node)
        assert node["hostname"] and node["cpu_model"] and node["cores"] >= 1 and node["memory_bytes"] > 0 and node["arch"]
    assert done["edge/score"]["node"]["ray_cpus"] == 1.0 and done["cloud/score"]["node"]["ray_cpus"] == 2.0
    assert done["moon/score"]["status"] == "failed"
    assert done["moon/score"]["error"] == "no node of the cluster has the labels tier=moon"
    assert "moon/timing" not in done  # a task after a failed one never runs
    # a 13-file scoring task (0.3 s a file) reports its files as it goes, not only when it ends
    assert done["slow/score"]["status"] == "ok"
    assert any(0 < units < 13 for units in out["progress"]) and out["progress"][-1] == 13, out["progress"]
