"""Real interruptions of `harness run`, and what it listens on.

- Ctrl-C (SIGINT) and SIGTERM stop a run cleanly: exit 130 / 143, one line, the manifest says `interrupted`,
  finished cells are kept, and `--resume` finishes the run without touching them.
- A Ray worker killed while it runs a cell (SIGKILL, not an exception) fails that cell only; the others complete,
  and `--resume` finishes the run. No cell is lost or duplicated.
- A private local Ray listens on 127.0.0.1 only, even on a host with a routable interface.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, harness_cmd, needs_netns, private_net, ray_env, routable_namespace

pytestmark = needs_netns

ENV = {"PYTHONPATH": str(REPO / "tests")}


def scenario(path: Path, seconds: float, hold: Path | None = None) -> Path:
    held = f", hold_file: '{hold}', pid_file: '{hold}.pid'" if hold else ""
    path.write_text(
        "name: interrupted\ncorpus:\n  synthetic: {seed: 2, rows: 600}\ndetectors:\n"
        '  - type: "null"\n'
        "  - type: userdet:LastValueJump\n"
        f"  - type: userdet:Slow\n    label: slow\n    params: {{seconds: {seconds}{held}}}\n    grid: {{tag: [a, b, c]}}\n"
    )
    return path


CELLS = ["null", "LastValueJump", "slow.tag-a", "slow.tag-b", "slow.tag-c"]


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def results(out: Path) -> dict[str, dict]:
    return {c: json.loads((out / "cells" / c / "result.json").read_text()) for c in CELLS if (out / "cells" / c / "result.json").is_file()}


def table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "table.csv", keep_default_na=False).set_index("cell")


def finish_with_resume(cmd: list[str], out: Path, untouched: list[str]) -> None:
    """--resume completes the run, reruns nothing that finished, and leaves exactly one record per task."""
    stamps = {c: (out / "cells" / c / "result.json").stat().st_mtime_ns for c in untouched}
    again = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300, env=ray_env(**ENV), cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {c: (out / "cells" / c / "result.json").stat().st_mtime_ns for c in untouched} == stamps
    done = results(out)
    assert sorted(done) == sorted(CELLS)
    assert all(r["status"] == "ok" and list(r["tasks"]) == ["score"] for r in done.values())
    assert table(out).index.tolist() == CELLS and set(table(out)["status"]) == {"ok"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumes"]) == 1 and manifest["resumes"][0]["code"]["tree_sha256"]


def as_in_a_terminal() -> None:
    """Ctrl-C's disposition as a terminal's foreground command has it: a suite started in the background (as CI may
    start it) has SIGINT ignored, and a child inherits that, so `harness run` would rightly not see the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_stops_the_run_cleanly_and_resume_finishes_it(tmp_path: Path, sig, code: int, word: str) -> None:
    out = tmp_path / "run"
    hold = tmp_path / "hold"  # the slow cells wait while it exists, so the signal comes mid-run at any speed
    hold.write_text("")
    cmd = private_net(harness_cmd("run", str(scenario(tmp_path / "s.yaml", 0.4, hold)), "--out", str(out)))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_env(**ENV), cwd=REPO,
                            preexec_fn=as_in_a_terminal)
    try:
        wait_for(lambda: "null" in results(out), 120, "the first cell", proc)
        wait_for(Path(f"{hold}.pid").exists, 120, "a slow cell to hold", proc)
        started_at = json.loads((out / "manifest.json").read_text())["started_at"]
        proc.send_signal(sig)
        hold.unlink()  # released, each slow cell still takes 13 files x 0.4 s: the run stops before any finishes
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        hold.unlink(missing_ok=True)
    assert proc.returncode == code, stderr[-3000:]
    # the run's own lines (Ray forwards its workers' output prefixed "(pid=N)": a worker torn down mid-task at
    # shutdown has once printed an abort of Ray's own there, which is not the run's)
    own = "\n".join(line for line in stderr.splitlines() if "(pid=" not in line)
    assert "Traceback" not in own and "Aborted" not in own and "*** " not in own, stderr[-3000:]
    assert f"harness: {word}; finished tasks are kept" in stderr.splitlines()[-1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["finished_at"]
    kept = [c for c, r in results(out).items() if r["status"] == "ok"]
    assert "null" in kept and len(kept) < len(CELLS), kept
    assert set(table(out).loc[[c for c in CELLS if c not in kept], "status"]) == {"pending"}
    if sig == signal.SIGINT:  # either signal leaves the same state (asserted above): one resume proves it finishes
        finish_with_resume(cmd, out, kept)
        assert json.loads((out / "manifest.json").read_text())["started_at"] == started_at  # a resume keeps it


def test_a_killed_worker_fails_its_cell_only_and_resume_finishes(ray_cluster, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    out = tmp_path / "run"
    cmd = ray_cluster.cmd(harness_cmd("run", str(scenario(tmp_path / "s.yaml", 0.0, hold)), "--out", str(out), "--address", ray_cluster.gcs_address))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_env(**ENV), cwd=REPO)
    try:
        pid_file = Path(f"{hold}.pid")
        wait_for(pid_file.exists, 120, "a cell to hold", proc)
        victim = int(pid_file.read_text())
        held = next(c for c in CELLS if c.startswith("slow"))  # whichever slow cell got there first holds
        pid_file.unlink()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: any(r["status"] == "failed" for r in results(out).values()), 120, "the killed cell's record")
        hold.unlink()  # the other slow cells go through
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr[-3000:]
    done = results(out)
    failed = [c for c, r in done.items() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0].startswith("slow"), done.keys()
    error = done[failed[0]]["tasks"]["score"]["error"]
    assert "Worker" in error or "worker" in error, error
    assert sorted(done) == sorted(CELLS) and sum(r["status"] == "ok" for r in done.values()) == len(CELLS) - 1
    del held
    finish_with_resume(cmd, out, [c for c in CELLS if c != failed[0]])


def test_a_private_ray_listens_on_loopback_only(tmp_path: Path) -> None:
    """On a host with a routable interface (a veth with an address and a default route, in a named network
    namespace), every socket the run's private Ray listens on is bound to 127.0.0.1, and Ray never probes an
    outside address to find the machine's IP."""
    with routable_namespace("harness-sec") as ns:
        hold = tmp_path / "hold"
        hold.write_text("")
        cmd = ["ip", "netns", "exec", ns, *harness_cmd("run", str(scenario(tmp_path / "s.yaml", 0.0, hold)), "--out", str(tmp_path / "run"))]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_env(**ENV), cwd=REPO)
        try:
            wait_for(Path(f"{hold}.pid").exists, 120, "a running cell", proc)
            listening = subprocess.run(["ip", "netns", "exec", ns, "ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
            hold.unlink()
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            proc.kill()
    addresses = [line.split()[3] for line in listening.splitlines() if line.strip()]
    assert len(addresses) >= 5, listening  # GCS, raylet, workers, agents...
    outside = [a for a in addresses if not (a.startswith("127.0.0.1:") or a.startswith("[::ffff:127.0.0.1]:"))]
    assert not outside, f"listening beyond loopback: {outside}"
    assert proc.returncode == 0, stderr[-3000:]
    assert "8.8.8.8" not in stderr and "external connectivity" not in stderr, stderr[-3000:]
