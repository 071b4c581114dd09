"""The cluster configs a user applies: the launcher configs valid against the schema Ray itself ships, every
config authenticating with a token it never contains, dashboards kept off public interfaces, the KubeRay
manifests well formed, the monitoring configs naming the harness's metrics; and a real token-authenticated head
that runs a job submitted with the token and refuses one without it."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO, kill_stragglers, needs_netns, stop_group

CLUSTERS = REPO / "clusters"
LAUNCHER = [CLUSTERS / "aws.yaml", CLUSTERS / "gcp.yaml"]
HARNESS_METRICS = ("harness_cells_planned", "harness_cells_finished_total", "harness_load_achieved_rps",
                   "harness_load_achieved_eps", "harness_load_latency_ms", "harness_load_errors_total")
TOKEN_LIKE = re.compile(r"\b[0-9a-f]{32,}\b")


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_configs_are_valid_and_authenticate(path: Path) -> None:
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, schema)
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key] if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert "RAY_AUTH_MODE=token" in command and "RAY_AUTH_TOKEN" in command, command
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head
    tiers = {t["labels"]["tier"] for t in config["available_node_types"].values()}
    assert tiers == {"cloud", "edge"}
    assert not TOKEN_LIKE.search(path.read_text()), "a literal token in the config"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def check_ray_job_spec(spec: dict) -> None:
    assert spec["entrypoint"].startswith("harness run ")
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "harness-ray-token"}
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert spec["submissionMode"] == "SidecarMode"  # submitted from beside the head: the dashboard stays local
    labels = [g["rayStartParams"]["labels"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]
    assert "tier=cloud" in labels and "tier=edge" in labels
    for c in containers(cluster):
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "harness-ray-token", "key": "auth_token"}


def test_kuberay_manifests() -> None:
    for path in sorted((CLUSTERS / "kuberay").glob("*.yaml")):
        for doc in documents(path):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path
            assert not (doc["kind"] == "Service" and doc.get("spec", {}).get("type") in ("LoadBalancer", "NodePort")), path
            assert doc["kind"] != "Ingress", path
        assert not TOKEN_LIKE.search(path.read_text()), path
    (job,) = documents(CLUSTERS / "kuberay" / "rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob") and job["spec"]["shutdownAfterJobFinishes"]
    check_ray_job_spec(job["spec"])
    (cron,) = documents(CLUSTERS / "kuberay" / "raycronjob.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("ray.io/v1", "RayCronJob")
    assert re.fullmatch(r"(\S+\s+){4}\S+", cron["spec"]["schedule"]), cron["spec"]["schedule"]
    check_ray_job_spec(cron["spec"]["jobTemplate"])
    kinds = {d["kind"]: d for d in documents(CLUSTERS / "kuberay" / "cronjob.yaml")}
    assert kinds["CronJob"]["apiVersion"] == "batch/v1"
    assert re.fullmatch(r"(\S+\s+){4}\S+", kinds["CronJob"]["spec"]["schedule"])
    (rule,) = kinds["Role"]["rules"]
    assert rule["resources"] == ["rayjobs"] and "*" not in rule["verbs"]  # allowed to make RayJobs, nothing else


def test_monitoring_configs_name_the_harness_metrics() -> None:
    dashboard = json.loads((CLUSTERS / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in HARNESS_METRICS:
        assert metric in exprs, metric
    prometheus = yaml.safe_load((CLUSTERS / "monitoring" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    assert jobs["harness"]["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    assert jobs["ray"]["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]


def test_the_edge_join_script_is_valid_shell() -> None:
    script = CLUSTERS / "edge" / "join.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "RAY_AUTH_MODE=token" in text and "--labels=" in text and "tier=edge" in text


# --- a real head with token authentication ----------------------------------------------------------------------


@needs_netns
def test_a_token_head_runs_jobs_with_the_token_and_refuses_them_without(tmp_path) -> None:
    ns, temp = f"harness-tok-{uuid.uuid4().hex[:6]}", f"/tmp/rayk-{uuid.uuid4().hex[:6]}"
    token = secrets.token_hex(32)
    base = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "HOME": str(tmp_path)}  # no stray ~/.ray
    base.pop("RAY_AUTH_TOKEN_PATH", None)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    head = None
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        log = tmp_path / "head.log"
        with open(log, "w") as out:
            head = subprocess.Popen(
                ["ip", "netns", "exec", ns, "ray", "start", "--head", "--block", "--disable-usage-stats", "--port=6379",
                 "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                 "--dashboard-port=8265", "--num-cpus=1", f"--temp-dir={temp}"],
                stdout=out, stderr=subprocess.STDOUT, env={**base, "RAY_AUTH_TOKEN": token}, start_new_session=True)
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

        def submit(env: dict) -> subprocess.CompletedProcess:
            cmd = ["ray", "job", "submit", "--address", "http://127.0.0.1:8265", "--", "python", "-c", "print('hello-' + 'token')"]
            return subprocess.run(["ip", "netns", "exec", ns, *cmd], env=env, capture_output=True, text=True, timeout=120)

        ok = submit({**base, "RAY_AUTH_TOKEN": token})
        assert ok.returncode == 0 and "hello-token" in ok.stdout, ok.stdout[-2000:] + ok.stderr[-2000:]
        for env in ({**base, "RAY_AUTH_TOKEN": secrets.token_hex(32)}, base):  # a wrong token, and none at all
            refused = submit(env)
            assert refused.returncode != 0 and "hello-token" not in refused.stdout, refused.stdout[-2000:]
            said = (refused.stdout + refused.stderr).lower()
            assert "token" in said or "unauthori" in said or "401" in said, said[-2000:]  # refused for its credentials
    finally:
        if head is not None:
            stop_group(head)
        kill_stragglers(temp)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(temp, ignore_errors=True)
