"""The cluster configs a user applies (clusters/): the launcher configs valid against the schema Ray itself ships and
their start commands run as a shell runs them; every config authenticating with a token it never contains;
dashboards kept off public interfaces; the KubeRay manifests well formed and in step with each other; the edge join
script; the monitoring configs naming the harness's metrics; and a real token-authenticated head that runs a job
submitted with the token and refuses one with a wrong token or none."""

from __future__ import annotations

import json
import platform
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO, kill_stragglers, needs_netns, needs_shellcheck, ray_env, stop_group
from harness.serving.http_guard import IMPORT_PATH as GUARD  # every node's Serve front door (docs/serving.md)

CLUSTERS = REPO / "clusters"
KUBERAY = CLUSTERS / "kuberay"
LAUNCHER = [CLUSTERS / "aws.yaml", CLUSTERS / "gcp.yaml"]
HARNESS_METRICS = ("harness_cells_planned", "harness_cells_finished_total", "harness_load_achieved_rps",
                   "harness_load_achieved_eps", "harness_load_latency_ms", "harness_load_errors_total",
                   "harness_load_shed_total", "harness_sla_ok")
SERVE_METRICS = ("ray_serve_num_http_requests_total", "ray_serve_deployment_replica_healthy",
                 *(f"ray_harness_serve_{m}" for m in ("requests_total", "request_latency_ms_bucket", "events_total",
                                                      "errors_total", "shed_total", "streams", "warming_streams",
                                                      "replica_starts_total")))
TOKEN_LIKE = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{32,}(?![0-9A-Za-z])")  # what secrets.token_hex makes
SECRET = {"name": "harness-ray-token", "key": "auth_token"}  # the key KubeRay's authOptions.secretName reads
CRON_FIELD = re.compile(r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*")
CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def valid_cron(schedule: str) -> bool:
    fields = schedule.split()
    if len(fields) != 5:
        return False
    for field, (lo, hi) in zip(fields, CRON_RANGES):
        if not CRON_FIELD.fullmatch(field):
            return False
        if any(not lo <= int(n) <= hi for n in re.findall(r"(?<!/)\b\d+", field)):
            return False
    return True


def test_the_cron_check_itself() -> None:
    assert valid_cron("0 2 * * *") and valid_cron("*/15 0-6 1,15 * 1-5")
    assert not valid_cron("0 2 * *") and not valid_cron("61 2 * * *") and not valid_cron("@daily")


# --- the cluster launcher configs (aws.yaml, gcp.yaml) ----------------------------------------------------------


def start_commands(config: dict) -> list[tuple[str, str]]:
    return [(key, c) for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key] if "ray start" in c]


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_configs_are_valid_and_authenticate(path: Path) -> None:
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    text = path.read_text()
    config = yaml.safe_load(text)
    jsonschema.validate(config, schema)

    starts = start_commands(config)
    assert [k for k, _ in starts] == ["head_start_ray_commands", "worker_start_ray_commands"]
    for _, command in starts:
        assert "RAY_AUTH_MODE=token" in command and "RAY_USAGE_STATS_ENABLED=0" in command, command
        # the token is exported from a file the user made, never written here
        assert re.search(r'RAY_AUTH_TOKEN="\$\(cat [^)]+\)"', command), command
        assert command.index("export") < command.index("ray start"), command
        assert "0.0.0.0" not in command
    head = starts[0][1]
    assert "--dashboard-host=127.0.0.1" in head and "--labels=tier=cloud" in head
    assert config["file_mounts"]["~/.ray/harness_token"] == "~/.ray/harness_token"  # where the commands read it

    # labels: the launcher hands each node type's labels to its `ray start` (RAY_OVERRIDE_LABELS)
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["labels"]["tier"] == "cloud"
    assert {t["labels"]["tier"] for t in types.values()} == {"cloud", "edge"}

    # the firewall: groups/networks the user made (SSH from their CIDR, intra-cluster only), never the launcher's
    # default (an AWS group it makes also admits SSH from 0.0.0.0/0)
    for name, t in types.items():
        if config["provider"]["type"] == "aws":
            assert t["node_config"]["SecurityGroupIds"], name
        else:
            assert all("subnetworks/harness-ray" in n["subnetwork"] for n in t["node_config"]["networkInterfaces"]), name
    assert "0.0.0.0/0" not in json.dumps(config)
    assert not TOKEN_LIKE.search(text), "a literal token in the config"


def stand_in_ray(tmp_path: Path, body: str) -> tuple[str, Path, Path]:
    """A token file in a fresh HOME, and a `ray` on a PATH folder that runs `body` (sh) instead: (token, HOME, folder)."""
    token = secrets.token_hex(32)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "harness_token").write_text(token + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ray"
    fake.write_text("#!/bin/sh\n" + body)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return token, home, bin_dir


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_start_commands_export_the_token_as_bash_runs_them(path: Path, tmp_path: Path) -> None:
    """Each start command, run by bash with a stand-in `ray` on PATH: `ray start` sees token mode and the token from
    the file the launcher mounted, and the token is not on its command line."""
    token, home, bin_dir = stand_in_ray(tmp_path, '[ "$1" = start ] || exit 0\n'
                                        'printf "%s\\n" "MODE=$RAY_AUTH_MODE" "TOKEN=$RAY_AUTH_TOKEN" "STATS=$RAY_USAGE_STATS_ENABLED" '
                                        '"GUARD=$RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH" "INGRESS=$RAY_SERVE_ENABLE_DIRECT_INGRESS" "ARGS=$*"\n')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "RAY_HEAD_IP": "10.0.0.2"}
    for _, command in start_commands(yaml.safe_load(path.read_text())):
        out = subprocess.run(["bash", "-c", command], check=False, env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        seen = dict(line.split("=", 1) for line in out.stdout.splitlines())
        assert seen["MODE"] == "token" and seen["TOKEN"] == token and seen["STATS"] == "0", seen
        assert seen["GUARD"] == GUARD, seen  # Serve's proxies read bodies whole, bounded (harness.serving.http_guard)
        assert seen["INGRESS"] == "0", seen  # every target node's proxy serves HTTP (docs/targets.md)
        assert token not in seen["ARGS"]


# --- serving across hosts: every config's entrypoint -----------------------------------------------------------------


def check_serves_across_hosts(argv: list[str], token_path: str) -> None:
    """`harness run` argv (after `harness`) as the entrypoint gives it: the shipped cloud-vs-edge, its load cells'
    proxies on the nodes' addresses (not loopback, where the driver cannot reach another node's) and the token file
    the config provides; the harness's own parser and plan accept it, with that file standing in for the real one."""
    from harness.cli import _parser
    from harness.plan import plan
    from harness.serving.config import is_loopback

    args = _parser().parse_args(argv)
    assert (args.command, args.scenario) == ("run", "cloud-vs-edge"), argv
    assert args.serve_host and not is_loopback(args.serve_host), argv
    assert args.serve_token_file == token_path, (args.serve_token_file, token_path)
    with tempfile.TemporaryDirectory() as d:  # the config's token file, here: 64 hex characters, as its header makes
        token = Path(d) / "token"
        token.write_text(secrets.token_hex(32) + "\n")
        serve = plan(args.scenario, serve_host=args.serve_host, serve_token_file=str(token)).scenario.serve
    assert serve.host == args.serve_host and serve.token_file == str(token.resolve())


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_entrypoints_serve_across_hosts_with_the_mounted_token(path: Path) -> None:
    """The `ray job submit` of the config's header, as bash on your machine splits it, as Ray joins it
    (list2cmdline) and as the head's shell runs it (~ expanded there): the token file is the one file_mounts puts
    on every node."""
    header = " ".join(line.lstrip("# ").rstrip("\\").strip() for line in path.read_text().splitlines() if line.startswith("#"))
    command = re.search(r"ray job submit --address \S+ -- (harness run .*?--out \S+)", header)[1]
    entrypoint = subprocess.list2cmdline(shlex.split(command))  # ray job submit's own joining
    head_home = "/home/ubuntu"
    argv = as_shell_runs(entrypoint, head_home)
    mounted = next(k for k in yaml.safe_load(path.read_text())["file_mounts"] if k.endswith("harness_token"))
    check_serves_across_hosts(argv[1:], mounted.replace("~", head_home, 1))


def as_shell_runs(entrypoint: str, home: str, before: str = ":") -> list[str]:
    """The argv a Ray job's entrypoint (or one command of it) becomes: Ray's job supervisor runs it with a shell
    (shell=True); `before` runs first in the same shell (the entrypoint's assignments)."""
    return subprocess.run(["sh", "-c", f"{before} && printf '%s\\n' {entrypoint}"], env={"HOME": home, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()


def token_file(spec: dict) -> str:
    """Where the head container of a RayJob spec has the token Secret's auth_token mounted as a file."""
    pod = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == SECRET["name"] and volume["secret"]["defaultMode"] == 0o440
    (mount,) = [m for c in pod["containers"] for m in c.get("volumeMounts", []) if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert pod["securityContext"]["fsGroup"] is not None  # the non-root user reads it through its group
    return f"{mount['mountPath']}/{SECRET['key']}"


def test_docs_say_throughput_optimized_needs_direct_ingress_off() -> None:
    text = " ".join((REPO / "docs" / "targets.md").read_text().split())
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" in text and "RAY_SERVE_ENABLE_DIRECT_INGRESS=0" in text
    assert "--serve-host" in text


# --- KubeRay --------------------------------------------------------------------------------------------------------


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def groups(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def check_ray_job_spec(spec: dict) -> None:
    """The sweep, then `harness compare` against the scenario's previous run in the history on the volume (the pods
    set HARNESS_HISTORY there): a regression exits 1 and fails the job, which the cluster's alerting sees."""
    name, sweep, judge = spec["entrypoint"].split(" && ")
    assert name.startswith("out=/results/cloud-vs-edge-$(date "), name  # a new folder per sweep, on the volume
    argv = as_shell_runs(sweep, "/home/harness", name)
    assert argv[:3] == ["harness", "run", "cloud-vs-edge"], sweep  # shipped in the image
    assert argv[argv.index("--address") + 1] == "auto"
    out = argv[argv.index("--out") + 1]
    assert out.startswith("/results/cloud-vs-edge-2") and "$" not in out, out
    check_serves_across_hosts(argv[1:], token_file(spec))
    compare = as_shell_runs(judge, "/home/harness", name)
    assert compare[:4] == ["harness", "compare", "previous", out], compare
    from harness.cli import _parser

    assert _parser().parse_args(compare[1:]).run_a == "previous"
    pods = [c for g in groups(spec["rayClusterSpec"]) for c in g["template"]["spec"]["containers"]]
    assert {e["value"] for c in pods for e in c["env"] if e["name"] == "HARNESS_HISTORY"} == {"/results/history.sqlite"}
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["authOptions"] == {"mode": "token", "secretName": SECRET["name"]}
    head, workers = cluster["headGroupSpec"], cluster["workerGroupSpecs"]
    assert workers and all(w["groupName"] and w["template"]["spec"]["containers"] for w in workers)
    # nothing exposes the head: its Service stays ClusterIP, no Ingress
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress", False)
    tiers = [g["labels"]["tier"] for g in groups(cluster)]
    assert tiers[0] == "cloud" and set(tiers) == {"cloud", "edge"}
    for g in groups(cluster):
        assert "labels" not in g.get("rayStartParams", {}), "labels twice: the group's labels field overrides it"
        for c in g["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}, c["name"]
            assert env["RAY_AUTH_TOKEN"] == {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": SECRET}}, c["name"]
            assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
            assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]["value"] == GUARD, c["name"]
            assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"]["value"] == "0", c["name"]  # docs/targets.md
    # /results on the head is the PVC of results-pvc.yaml
    pod = head["template"]["spec"]
    (mount,) = [m for c in pod["containers"] for m in c.get("volumeMounts", []) if m["mountPath"] == "/results"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (pvc,) = documents(KUBERAY / "results-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def all_kuberay_documents() -> list[tuple[Path, dict]]:
    """Every document of every manifest, and the RayJob the CronJob's ConfigMap carries."""
    found = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in documents(path):
            found.append((path, doc))
            if doc["kind"] == "ConfigMap":
                found += [(path, d) for v in doc["data"].values() for d in yaml.safe_load_all(v) if d]
    return found


def test_every_kuberay_manifest_is_well_formed_and_exposes_nothing() -> None:
    found = all_kuberay_documents()
    assert {p.name for p, _ in found} == {"rayjob.yaml", "raycronjob.yaml", "cronjob.yaml", "results-pvc.yaml"}
    for path, doc in found:
        assert doc["apiVersion"] and doc["kind"], path
        assert doc["metadata"].get("name") or doc["metadata"].get("generateName"), (path, doc["kind"])
        assert not (doc["kind"] == "Service" and doc.get("spec", {}).get("type") in ("LoadBalancer", "NodePort")), path
        assert doc["kind"] != "Ingress", path
        if doc["kind"] in ("RayJob", "RayCronJob"):
            assert doc["apiVersion"] == "ray.io/v1", path
    for path in KUBERAY.glob("*.yaml"):
        text = path.read_text()
        assert not TOKEN_LIKE.search(text), f"a literal token in {path.name}"
        assert "LoadBalancer" not in text and "NodePort" not in text, path


def test_the_rayjob() -> None:
    (job,) = documents(KUBERAY / "rayjob.yaml")
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == ("ray.io/v1", "RayJob", "harness-sweep")
    check_ray_job_spec(job["spec"])


def test_the_raycronjob_runs_the_same_rayjob_nightly() -> None:
    (job,) = documents(KUBERAY / "rayjob.yaml")
    (cron,) = documents(KUBERAY / "raycronjob.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("ray.io/v1", "RayCronJob")
    assert valid_cron(cron["spec"]["schedule"]), cron["spec"]["schedule"]
    # KubeRay 1.6's RayCronJobSpec: jobTemplate (a RayJobSpec), schedule, suspend (timeZone came later)
    assert set(cron["spec"]) <= {"jobTemplate", "schedule", "suspend"}
    assert cron["spec"]["jobTemplate"] == job["spec"]
    check_ray_job_spec(cron["spec"]["jobTemplate"])


def test_the_plain_cronjob_creates_the_same_rayjob_with_an_account_that_can_do_little_else() -> None:
    (job,) = documents(KUBERAY / "rayjob.yaml")
    kinds = {d["kind"]: d for d in documents(KUBERAY / "cronjob.yaml")}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}
    cron = kinds["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and valid_cron(cron["spec"]["schedule"])
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["kubectl", "create"]
    # the RayJob it creates: rayjob.yaml's spec, under a new name each night
    (created,) = [d for d in yaml.safe_load_all(kinds["ConfigMap"]["data"]["rayjob.yaml"]) if d]
    assert created["kind"] == "RayJob" and created["metadata"]["generateName"] and "name" not in created["metadata"]
    assert created["spec"] == job["spec"]
    # the account: bound to the pod, allowed create/get/delete on rayjobs only
    sa = kinds["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] == sa
    binding = kinds["RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": kinds["Role"]["metadata"]["name"]}
    assert kinds["Role"]["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "delete"]}]
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["allowPrivilegeEscalation"] is False


# --- the edge join script ---------------------------------------------------------------------------------------


def test_the_edge_join_script_is_valid_shell() -> None:
    script = CLUSTERS / "edge" / "join.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True).returncode == 0


@needs_shellcheck
def test_the_edge_join_script_passes_shellcheck() -> None:
    out = subprocess.run(["shellcheck", str(CLUSTERS / "edge" / "join.sh")], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_the_edge_join_script_joins_with_the_token_and_labels(tmp_path: Path) -> None:
    """join.sh with a stand-in `ray` on PATH: the `ray start` it execs, and its environment."""
    token, home, bin_dir = stand_in_ray(tmp_path, 'printf "%s\\n" "MODE=$RAY_AUTH_MODE" "TOKEN=$RAY_AUTH_TOKEN" '
                                        '"MEMTHRESH=$RAY_memory_usage_threshold" "STATS=$RAY_USAGE_STATS_ENABLED" '
                                        '"GUARD=$RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH" "INGRESS=$RAY_SERVE_ENABLE_DIRECT_INGRESS"\n'
                                        'printf "ARG=%s\\n" "$@"\n')
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "HEAD": "10.8.0.1", "NODE_IP": "10.8.0.7"}
    script = str(CLUSTERS / "edge" / "join.sh")
    out = subprocess.run(["bash", script, "2", "1500000000"], check=False, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    args = [line[4:] for line in lines if line.startswith("ARG=")]
    seen = dict(line.split("=", 1) for line in lines if not line.startswith("ARG="))
    assert seen == {"MODE": "token", "TOKEN": token, "MEMTHRESH": "0.8", "STATS": "0", "GUARD": GUARD, "INGRESS": "0"}
    assert args[0] == "start" and "--block" in args
    assert {"--address=10.8.0.1:6379", "--node-ip-address=10.8.0.7", f"--labels=tier=edge,arch={platform.machine()}",
            "--num-cpus=2", "--memory=1500000000"} <= set(args), args
    assert not any(token in a for a in args)
    # no token at all: refused before Ray starts
    (home / ".ray" / "harness_token").unlink()
    out = subprocess.run(["bash", script], check=False, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "no RAY_AUTH_TOKEN" in out.stderr and "MODE=" not in out.stdout


# --- monitoring -------------------------------------------------------------------------------------------------


def test_monitoring_configs_name_the_harness_metrics() -> None:
    """The generated dashboards (clusters/monitoring/dashboards.py) read the provisioned data source and chart
    every metric of the run exporter and of the service."""
    panels = [p for f in sorted((CLUSTERS / "monitoring" / "grafana" / "dashboards").glob("*.json"))
              for p in json.loads(f.read_text())["panels"]]
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "prometheus"}, p["title"]
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]) and p["gridPos"]["w"] > 0
    per_panel = [" ".join(t["expr"] for t in p["targets"]) for p in panels]
    for metric in (*HARNESS_METRICS, *SERVE_METRICS):
        assert any(re.search(rf"\b{metric}\b", e) for e in per_panel), metric

    prometheus = yaml.safe_load((CLUSTERS / "monitoring" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    assert jobs["harness"]["static_configs"] == [{"targets": ["127.0.0.1:9464"]}]
    assert jobs["ray"]["file_sd_configs"] == [{"files": ["/tmp/ray/prom_metrics_service_discovery.json"]}]


# --- a real head with token authentication ----------------------------------------------------------------------


@needs_netns
def test_a_token_head_runs_jobs_with_the_token_and_refuses_them_without(tmp_path: Path) -> None:
    ns, temp = f"harness-tok-{uuid.uuid4().hex[:6]}", f"/tmp/rayk-{uuid.uuid4().hex[:6]}"
    token = secrets.token_hex(32)
    # everything explicit: token mode, and HOME without a ~/.ray/auth_token that Ray would otherwise read
    base = ray_env(RAY_AUTH_MODE="token", HOME=str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        base.pop(name, None)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    head, runs = None, []
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

        def submit(env: dict) -> subprocess.Popen:
            cmd = ["ray", "job", "submit", "--address", "http://127.0.0.1:8265", "--", "python", "-c", "print('hello-' + 'token')"]
            return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)

        # all at once: the token; a wrong token; a client that sends none
        runs = [submit({**base, "RAY_AUTH_TOKEN": token}), submit({**base, "RAY_AUTH_TOKEN": secrets.token_hex(32)}),
                submit({**base, "RAY_AUTH_MODE": "disabled"})]
        (ok_out, ok_err), *refusals = [r.communicate(timeout=120) for r in runs]
        assert runs[0].returncode == 0 and "hello-token" in ok_out, ok_out[-2000:] + ok_err[-2000:]
        for run, (out, err) in zip(runs[1:], refusals):
            assert run.returncode != 0 and "hello-token" not in out, out[-2000:]
            said = (out + err).lower()
            assert "token" in said or "unauthori" in said or "401" in said, said[-2000:]  # refused for its credentials
        # and the server itself, asked over plain HTTP: 401 without a token, 403 with a wrong one, 200 with it
        probe = ("import sys, urllib.request, urllib.error\n"
                 "for t in sys.argv[1:]:\n"
                 "    req = urllib.request.Request('http://127.0.0.1:8265/api/jobs/', headers={'Authorization': 'Bearer ' + t} if t else {})\n"
                 "    try: print(urllib.request.urlopen(req, timeout=30).status)\n"
                 "    except urllib.error.HTTPError as e: print(e.code)\n")
        codes = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe, "", secrets.token_hex(32), token],
                               capture_output=True, text=True, timeout=60, env=base, check=True).stdout.split()
        assert codes == ["401", "403", "200"], codes
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
        if head is not None:
            stop_group(head, grace_s=3)  # `ray start --block` lingers on SIGTERM; the rest of its group with it
        kill_stragglers(temp)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(temp, ignore_errors=True)


def test_the_scheduled_sweep_runs_then_judges_and_fails_on_a_regression(tmp_path: Path) -> None:
    """clusters/sweep.sh (the launcher clusters' nightly schedule) with a stand-in `harness` on PATH: the run on
    the cluster with the token, then `harness compare previous` on its folder with the history beside the results;
    a regression (compare's exit 1) fails the sweep, a failed run fails it without judging, no token is exit 2."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    (home / ".ray").mkdir(parents=True)
    bin_dir.mkdir()
    token = secrets.token_hex(16)
    (home / ".ray" / "harness_token").write_text(token + "\n")
    calls = tmp_path / "calls"
    fake = bin_dir / "harness"
    fake.write_text('#!/bin/sh\nprintf "%s|%s|%s|%s\\n" "$RAY_AUTH_MODE" "$RAY_AUTH_TOKEN" "$HARNESS_HISTORY" "$*" >> "$CALLS"\n'
                    'case "$1" in run) exit "$RUN_RC";; compare) exit "$COMPARE_RC";; esac\n')
    fake.chmod(0o755)
    script = str(CLUSTERS / "sweep.sh")

    def sweep(run_rc: int, compare_rc: int) -> tuple[int, list[list[str]]]:
        calls.unlink(missing_ok=True)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "CALLS": str(calls), "RUN_RC": str(run_rc),
               "COMPARE_RC": str(compare_rc)}
        out = subprocess.run(["bash", script, "cloud-vs-edge"], env=env, capture_output=True, text=True, timeout=30)
        return out.returncode, [line.split("|") for line in calls.read_text().splitlines()] if calls.exists() else []

    rc, calls_made = sweep(0, 1)
    assert rc == 1 and len(calls_made) == 2
    (mode, tok, history, run), (_, _, _, judge) = calls_made
    assert (mode, tok, history) == ("token", token, f"{home}/results/history.sqlite")
    argv = run.split()
    out = argv[argv.index("--out") + 1]
    assert argv[:2] == ["run", "cloud-vs-edge"] and argv[argv.index("--address") + 1] == "auto"
    assert argv[argv.index("--serve-token-file") + 1] == f"{home}/.ray/harness_token" and out.startswith(f"{home}/results/cloud-vs-edge-")
    assert judge.split() == ["compare", "previous", out, "--skip", "seconds"]
    assert sweep(0, 0)[0] == 0
    rc, calls_made = sweep(1, 0)
    assert rc == 1 and [c[3].split()[0] for c in calls_made] == ["run"]  # a failed run is not judged
    (home / ".ray" / "harness_token").unlink()
    assert sweep(0, 0) == (2, [])


@needs_shellcheck
def test_the_sweep_script_passes_shellcheck() -> None:
    out = subprocess.run(["shellcheck", str(CLUSTERS / "sweep.sh")], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
