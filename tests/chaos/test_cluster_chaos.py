"""The cluster playbooks (docs/playbooks.md), each failure made to happen on a private token-authenticated
Ray cluster, its alert checked by a real Prometheus against the real series, its documented fix run, and the
recovery timed with nothing lost or run twice.

- token-mismatch: a worker node with a wrong RAY_AUTH_TOKEN is refused and never joins, a client with a wrong one
  is one line (exit 2); HarnessRayNodesMissing fires; the node started with the cluster's token joins.
- results-disk-full: the results tmpfs fills while a run is on; HarnessResultsDiskFull fires; the run stops with
  one line naming the file and ENOSPC, every file there whole; space freed, `--resume` finishes it.
- ray-head-lost: the head SIGKILLed mid-run; HarnessRayHeadLost fires; the run stops with one line, the cells it
  finished kept; the head restarted with the same command, `--resume` finishes the run.
- history-corrupt (after it, to reuse its run folder): the history store half overwritten with garbage: a run still
  completes (one warning line), `history list` is one line; `history rebuild` lists every run folder once.

One cluster (a head, and a worker from the token test on) in its own network namespace for the file. The head
listens on port 6391: `ray start --head` refuses a port that a GCS process anywhere on the machine was started
with (it scans the process list), and other tests' heads in their own namespaces use 6379.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from chaos.prom import Prometheus
from conftest import REPO, RayCluster, can_isolate, harness_cmd, kill_stragglers, needs_netns, needs_prometheus, ray_env, require, stop_group

pytestmark = [needs_netns, needs_prometheus]

TOKEN = secrets.token_hex(32)
GCS = "127.0.0.1:6391"
HEAD_METRICS, WORKER_METRICS = 8090, 8091
HEAD_ARGS = ("--head", "--port=6391", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--dashboard-port=8265",
             f"--metrics-export-port={HEAD_METRICS}", "--num-cpus=2")
WORKER_ARGS = (f"--address={GCS}", "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--metrics-export-port={WORKER_METRICS}")
CELLS = ["null", "LastValueJump", "slow.tag-a", "slow.tag-b", "slow.tag-c"]
METRICS = "9464"


class Cluster:
    """The file's cluster, its Prometheus, and the environment of a client holding the cluster's token."""

    def __init__(self, ray: RayCluster, prom: Prometheus, home: Path, history: Path, root: Path):
        self.ray, self.prom, self.home, self.history, self.root = ray, prom, home, history, root  # root: run folders

    def env(self, **extra: str) -> dict[str, str]:
        """A client's environment: token auth with the cluster's token, no ~/.ray of the machine's."""
        env = ray_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN, HOME=str(self.home), HARNESS_HISTORY=str(self.history),
                      PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        env.pop("RAY_ADDRESS", None)
        env.update(extra)
        return env

    def start_head(self) -> subprocess.Popen:
        """The head, as the playbook starts it (and restarts it: the same command)."""
        return self.ray.start_node(*HEAD_ARGS, f"--temp-dir={self.ray.temp_dir}", env=self.env())

    def harness(self, *args: str, env: dict[str, str] | None = None, prefix: list[str] = (), timeout: float = 180,
                background: bool = False):
        cmd = [*prefix, *self.ray.cmd(harness_cmd(*args))]
        if background:
            return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or self.env(),
                                    cwd=REPO, start_new_session=True)
        return subprocess.run(cmd, capture_output=True, text=True, env=env or self.env(), cwd=REPO, timeout=timeout)

    def alive_nodes(self) -> int:
        """Ray's state API (the dashboard's /api/v0/nodes, with the token): nodes ALIVE."""
        probe = ("import json, sys, urllib.request\n"
                 "r = urllib.request.Request('http://127.0.0.1:8265/api/v0/nodes?limit=100', "
                 "headers={'Authorization': 'Bearer ' + sys.argv[1]})\n"
                 "print(sum(n['state'] == 'ALIVE' for n in json.load(urllib.request.urlopen(r, timeout=20))['data']['result']['result']))")
        out = subprocess.run(self.ray.cmd([sys.executable, "-c", probe, TOKEN]), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require(can_isolate(), "needs root, unshare and ip to keep Ray on a private loopback")
    tmp = tmp_path_factory.mktemp("cluster")
    ns, temp = f"harness-cc-{uuid.uuid4().hex[:6]}", Path(f"/tmp/rcc-{uuid.uuid4().hex[:6]}")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    ray = RayCluster(ns, GCS, "http://127.0.0.1:8265", temp)
    (tmp / "home").mkdir()
    try:
        subprocess.run(ray.cmd(["ip", "link", "set", "lo", "up"]), check=True)
        prom = Prometheus(tmp / "prom", enter=["ip", "netns", "exec", ns],
                          static={"harness": [f"127.0.0.1:{METRICS}"],
                                  "ray-nodes": [f"127.0.0.1:{HEAD_METRICS}", f"127.0.0.1:{WORKER_METRICS}"]},
                          file_sd={"ray": [str(temp / "prom_metrics_service_discovery.json")]})
        c = Cluster(ray, prom, tmp / "home", tmp / "history.sqlite", tmp / "results")
        c.start_head()
        with prom:
            yield c
    finally:
        for proc in reversed(list(ray.nodes)):
            stop_group(proc, grace_s=3)  # `ray start --block` lingers on SIGTERM; its group goes with it
        kill_stragglers(str(temp))
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(temp, ignore_errors=True)


def scenario(path: Path, hold: Path | None = None, slow: bool = True) -> Path:
    """Two quick cells and, with `slow`, three that wait while `hold` exists (a run that is on when the failure
    comes, at any speed), on the embedded synthetic corpus."""
    text = 'name: cluster-chaos\ncorpus:\n  synthetic: {seed: 2, rows: 600}\ndetectors:\n  - type: "null"\n  - type: userdet:LastValueJump\n'
    if slow:
        text += (f"  - type: userdet:Slow\n    label: slow\n    params: {{seconds: 0.0, hold_file: '{hold}', pid_file: '{hold}.pid'}}\n"
                 "    grid: {tag: [a, b, c]}\n")
    path.write_text(text)
    return path


def results(out: Path) -> dict[str, dict]:
    return {c: json.loads((out / "cells" / c / "result.json").read_text()) for c in CELLS if (out / "cells" / c / "result.json").is_file()}


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def own_lines(stderr: str) -> list[str]:
    """The run's own lines: not its progress, nor what Ray prints itself (prefixed `[date ...`, or `(pid=N)`)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("progress:", "metrics:", "[", "(", "\x1b"))]


def whole(folder: Path) -> None:
    """Nothing half-written: no temporary file of an atomic write left, every JSON file parses."""
    assert not [p for p in folder.rglob("*.tmp")], [str(p) for p in folder.rglob("*.tmp")]
    for p in folder.rglob("*.json"):
        json.loads(p.read_text())


def finished_with_resume(c: Cluster, scenario_file: Path, out: Path, done: dict[str, int], prefix: list[str] = (),
                         seen: Path | None = None) -> float:
    """`harness run SCENARIO --resume --out OUT --address ...` runs only what is missing: every cell recorded ok
    exactly once, the `done` ones (cell -> mtime of its result.json) untouched. `seen`: the folder as this process
    reaches it (another mount namespace's). Returns when the resume ended (monotonic)."""
    again = c.harness("run", str(scenario_file), "--resume", "--out", str(out), "--address", GCS, prefix=prefix)
    ended = time.monotonic()
    assert again.returncode == 0, again.stderr[-3000:]
    seen = seen or out
    recorded = results(seen)
    assert sorted(recorded) == sorted(CELLS)
    assert all(r["status"] == "ok" and list(r["tasks"]) == ["score"] for r in recorded.values()), recorded
    assert {cell: (seen / "cells" / cell / "result.json").stat().st_mtime_ns for cell in done} == done
    manifest = json.loads((seen / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumes"]) == 1
    whole(seen)
    return ended


def test_token_mismatch(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    wrong = c.env(RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_gcs_server_port_wait_time_s="2")  # 2 tries, not 20: same refusal
    log = tmp_path / "wrong-worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(c.ray.cmd(["ray", "start", "--block", "--disable-usage-stats", *WORKER_ARGS]), stdout=out,
                                  stderr=subprocess.STDOUT, env=wrong, start_new_session=True)
    try:
        client = c.harness("run", str(scenario(tmp_path / "s.yaml", slow=False)), "--out", str(tmp_path / "run"), "--address", GCS,
                           env=wrong, timeout=120)
        assert worker.wait(timeout=120) != 0
    finally:
        stop_group(worker, grace_s=3)
    assert client.returncode == 2 and "Traceback" not in client.stderr, client.stderr[-3000:]
    assert client.stderr.splitlines() == [client.stderr.strip()] and "refused this client's token" in client.stderr, client.stderr
    assert not any((tmp_path / "run").iterdir())  # refused before anything is written
    assert "Authentication token is missing or incorrect" in log.read_text(), log.read_text()[-3000:]
    assert c.alive_nodes() == 1
    alert = c.prom.wait_firing("HarnessRayNodesMissing", timeout_s=60)
    assert alert["labels"]["playbook"] == "token-mismatch"
    # the fix: start the node with the cluster's token (the head's secret), nothing else changed
    start = time.monotonic()
    node = c.ray.start_node(*WORKER_ARGS, env=c.env())
    wait_for(lambda: c.alive_nodes() == 2, 60, "the node to join")
    joined = time.monotonic() - start
    resolved = c.prom.wait_resolved("HarnessRayNodesMissing", timeout_s=60)
    print(f"RECOVERY token-mismatch {joined:.1f} s (node joined; alert resolved {resolved:.1f} s later)")
    # it leaves: its raylet names the head's address, and `ray start --head` refuses to start again (the
    # head-lost test's fix) while a process on this machine does
    stop_group(node, grace_s=3)
    c.ray.nodes.remove(node)


def test_results_disk_full(cluster: Cluster, tmp_path: Path) -> None:
    require(shutil.which("nsenter") is not None, "nsenter not on PATH (util-linux)")
    c = cluster
    mnt, hold = tmp_path / "results", tmp_path / "hold"
    mnt.mkdir()
    hold.write_text("")
    # a 4 MiB tmpfs seen only inside a mount namespace of its own: the holder keeps it; others enter it
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs -o size=4m tmpfs {mnt} && echo ready && exec sleep 600"],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        inside, view = ["nsenter", "-t", str(holder.pid), "-m"], Path(f"/proc/{holder.pid}/root")
        out = mnt / "run"
        seen = view / str(out).lstrip("/")  # the run folder as this process reaches it
        run = c.harness("run", str(scenario(tmp_path / "s.yaml", hold)), "--out", str(out), "--address", GCS, "--metrics-port", METRICS,
                        prefix=inside, background=True)
        try:
            wait_for(lambda: {"null", "LastValueJump"} <= set(results(seen)) and Path(f"{hold}.pid").exists(), 120, "two cells", run)
            before = {cell: (seen / "cells" / cell / "result.json").read_bytes() for cell in ("null", "LastValueJump")}
            with open(view / str(mnt).lstrip("/") / "filler", "wb") as filler:  # another writer fills the disk
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                        filler.flush()
                except OSError:
                    pass
            c.prom.wait_firing("HarnessResultsDiskFull", timeout_s=30, scenario="cluster-chaos")
            hold.unlink()  # the slow cells finish, and their records meet the full disk
            _, stderr = run.communicate(timeout=120)
        finally:
            stop_group(run, grace_s=3)
        assert run.returncode == 1, stderr[-3000:]
        lines = own_lines(stderr)
        assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
        assert lines[0].startswith(f"harness: error: no space left on the results disk (ENOSPC) writing {out}/"), lines
        assert f"--resume --out {out} --address {GCS}" in lines[0]
        whole(seen)
        assert {cell: (seen / "cells" / cell / "result.json").read_bytes() for cell in before} == before
        kept = {cell: (seen / "cells" / cell / "result.json").stat().st_mtime_ns for cell, r in results(seen).items() if r["status"] == "ok"}
        # the fix: free space (here: the other writer's file goes), then resume
        start = time.monotonic()
        (view / str(mnt).lstrip("/") / "filler").unlink()
        ended = finished_with_resume(c, tmp_path / "s.yaml", out, kept, prefix=inside, seen=seen)
        print(f"RECOVERY results-disk-full {ended - start:.1f} s (space freed -> resumed run complete)")
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_ray_head_lost(cluster: Cluster, tmp_path: Path) -> None:
    """It kills the head (and restarts it, as the fix)."""
    c = cluster
    hold, out = tmp_path / "hold", c.root / "head-lost"
    hold.write_text("")
    run = c.harness("run", str(scenario(tmp_path / "s.yaml", hold)), "--out", str(out), "--address", GCS, "--metrics-port", METRICS,
                    background=True)
    try:
        wait_for(lambda: {"null", "LastValueJump"} <= set(results(out)) and Path(f"{hold}.pid").exists(), 120, "two cells", run)
        kept = {cell: (out / "cells" / cell / "result.json").stat().st_mtime_ns for cell in ("null", "LastValueJump")}
        head = c.ray.nodes[0]
        killed = time.monotonic()
        os.killpg(head.pid, signal.SIGKILL)  # the head's every process: GCS, raylet, dashboard
        head.wait(timeout=30)
        c.ray.nodes.remove(head)
        _, stderr = run.communicate(timeout=90)
        stopped = time.monotonic() - killed
    finally:
        stop_group(run, grace_s=3)
        hold.unlink(missing_ok=True)
    c.prom.wait_firing("HarnessRayHeadLost", timeout_s=30, instance=f"127.0.0.1:{HEAD_METRICS}")
    assert run.returncode == 1, stderr[-3000:]
    lines = own_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith(f"harness: error: the Ray head at {GCS} is gone"), lines
    assert f"--resume --out {out} --address {GCS}" in lines[0]
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    whole(out)
    # the fix: the head again, with the same command; then resume
    c.start_head()
    ended = finished_with_resume(c, tmp_path / "s.yaml", out, kept)
    c.prom.wait_resolved("HarnessRayHeadLost", timeout_s=30)
    print(f"RECOVERY ray-head-lost {ended - killed:.1f} s (kill -> run stopped in {stopped:.1f} s -> head restarted -> resumed run complete)")


def test_history_corrupt(cluster: Cluster, tmp_path: Path) -> None:
    """After the head-lost test (whose run, resumed, indexed itself into the file's store), if it ran: the store
    corrupted, one more run, and the rebuild from the run folders under the file's results root."""
    c = cluster
    store, root = c.history, c.root
    quick = scenario(tmp_path / "s.yaml", slow=False)
    if not store.exists():  # run alone: one run to make the store
        assert c.harness("run", str(quick), "--out", str(root / "first"), "--address", GCS).returncode == 0
    size = store.stat().st_size
    store.write_bytes(secrets.token_bytes(size // 2) + store.read_bytes()[size // 2:])  # its first half garbage
    second = c.harness("run", str(quick), "--out", str(root / "second"), "--address", GCS)
    assert second.returncode == 0, second.stderr[-3000:]  # the run itself never fails for its history
    warning = own_lines(second.stderr)
    assert len(warning) == 1 and warning[0].startswith(f"harness: warning: the run was not indexed in the history: {store}: "), second.stderr
    assert "history rebuild" in warning[0]
    manifest = json.loads((root / "second" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and sorted(results(root / "second")) == ["LastValueJump", "null"]
    whole(root / "second")
    listed = c.harness("history", "list")
    assert listed.returncode == 2 and len(listed.stderr.splitlines()) == 1 and "Traceback" not in listed.stderr, listed.stderr
    assert f"{store}: not a readable history database" in listed.stderr
    # the fix
    start = time.monotonic()
    rebuilt = c.harness("history", "rebuild", str(root))
    listed = c.harness("history", "list")
    took = time.monotonic() - start
    folders = sorted(p.parent.name for p in root.glob("*/manifest.json"))
    assert rebuilt.returncode == 0 and f"{len(folders)} run(s)" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    aside = [p.name for p in store.parent.iterdir() if p.name.startswith(f"{store.name}.corrupt-")]
    assert len(aside) == 1 and aside[0] in rebuilt.stdout
    assert listed.returncode == 0, listed.stderr
    rows = [ln.split()[0] for ln in listed.stdout.splitlines()[1:]]
    assert sorted(r.rsplit("-", 1)[0] for r in rows) == folders and "second" in folders, listed.stdout  # each run once
    print(f"RECOVERY history-corrupt {took:.1f} s (history rebuild + list, {len(folders)} runs)")
