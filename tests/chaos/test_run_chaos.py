"""The failures that live in runs and their data, each made to happen on a real Ray cluster and judged by a real
Prometheus evaluating clusters/monitoring/alerts/runs.yml (docs/playbooks.md):

- a release re-quantizes its build with 75% structured pruning: NAB standard falls 18% against torch fp32
  (HarnessQuantizedAccuracyRegression), `harness compare --match` exits 1;
- it deploys a rolling quantile at q=0.9: 144 alerts per 1,000 events (HarnessAlertStorm);
- it asks for a cell the cluster cannot place (4 threads on 2 CPUs): HarnessCellsFailing;
- reviewers judge alerts days late: HarnessFeedbackLate, from `harness feedback status --metrics-file`.

The documented fixes (the previous build, the cross-validated policy the thresholds table recommends, a cell that
fits; reviewers back within the delay at which feedback helps) are run as the playbook prints them, and the time to
recover is measured. The run's verdicts reach Prometheus through node_exporter's textfile collector
(`harness run --metrics-file`): they outlive the run, as they must for a production scrape to see them.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chaos.prom import Prometheus
from tests.conftest import REPO, RayCluster, harness_cmd, needs_netns, require, stop_group

pytestmark = needs_netns

PREVIOUS_BUILD = "{backend: onnxruntime, precision: int8}"
PRUNED_BUILD = "{backend: onnxruntime, precision: int8, prune: structured, sparsity: 0.75, prune_epochs: 1}"
TOO_BIG = "{backend: onnxruntime, threads: 4}"
STORM = "{type: rolling_quantile, params: {q: 0.9}}"
RECOMMENDED = "{type: fixed, grid: {value: [0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9]}}"  # docs/thresholds.md
PREVIOUS_CELL, PRUNED_CELL = "ae.onnxruntime-int8-dynamic", "ae.onnxruntime-int8-dynamic.prune-structured.sparsity-0.75.prune-epochs-1"
# four files of the embedded corpus (both categories, for the cross-validated number the policies need): there the
# pruned build loses 38% of NAB standard, and feedback helps when verdicts arrive within a day, not three
FILES = ["synthNoAnomaly/periodic_noise.csv", "synthWithAnomaly/frequency_change.csv", "synthWithAnomaly/spike_and_flatline.csv",
         "synthWithAnomaly/spikes_multiple.csv"]
TEXTFILE_JOB = "node-textfile"


def scenario(builds: list[str], policy: str) -> str:
    """A deployment scenario on the embedded corpus: the autoencoder on torch fp32 and the given builds."""
    return ("name: deploy\ncorpus:\n  synthetic: {seed: 7, rows: 1500}\n  only: [" + ", ".join(FILES) + "]\n"
            "detectors:\n  - type: autoencoder\n    label: ae\n    params: {window: 16, hidden: 16, bottleneck: 4, epochs: 2}\n"
            "backends:\n  - {backend: torch}\n" + "".join(f"  - {b}\n" for b in builds)
            + f"scoring:\n  thresholds: optimize\n  policies:\n    - {policy}\n"
            "timing: {batch: 64, warmup: 2, min_iterations: 10, min_duration_s: 0.02, rounds: 1, exclusive: false}\n"
            "sla: {max_quantized_loss_pct: 5}\n")


@dataclass
class Stack:
    cluster: RayCluster
    prom: Prometheus
    textfiles: Path
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    def harness(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.cluster.run(harness_cmd(*map(str, args)), timeout=timeout, env=self.env)

    def run(self, name: str, text: str) -> tuple[subprocess.CompletedProcess, Path]:
        """`harness run` as the playbook has it: exporter on 9464, verdicts in the textfile collector's folder."""
        path, out = self.tmp / f"{name}.yaml", self.tmp / name
        path.write_text(text)
        t0 = time.monotonic()
        proc = self.harness("run", path, "--out", out, "--address", self.cluster.gcs_address, "--metrics-port", "9464",
                            "--fail-on-sla", "--metrics-file", self.textfiles / "harness-run-deploy.prom", timeout=240)
        print(f"TIMING run {name} {time.monotonic() - t0:.1f} s")
        return proc, out

    def value(self, expr: str) -> list[float]:
        return [float(r["value"][1]) for r in self.prom.query(expr)]


@pytest.fixture(scope="module")
def stack(ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory):
    """node_exporter (textfile collector only) and Prometheus in the cluster's namespace, scraping it and the run's
    exporter every second."""
    exporter_bin = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    require(exporter_bin is not None and shutil.which("prometheus") is not None,
            "needs prometheus and prometheus-node-exporter (apt-get install prometheus prometheus-node-exporter)")
    tmp = tmp_path_factory.mktemp("runchaos")
    textfiles = tmp / "textfiles"
    textfiles.mkdir()
    node = subprocess.Popen(ray_cluster.cmd([exporter_bin, "--web.listen-address=127.0.0.1:9100", "--collector.disable-defaults",
                                             "--collector.textfile", f"--collector.textfile.directory={textfiles}"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with Prometheus(tmp / "prom", ray_cluster.cmd([]), static={"harness": ["127.0.0.1:9464"], TEXTFILE_JOB: ["127.0.0.1:9100"]}) as prom:
            yield Stack(ray_cluster, prom, textfiles, tmp, {"HARNESS_CACHE": str(tmp / "cache"), "PYTHONPATH": str(REPO)})
    finally:
        stop_group(node)


@dataclass
class Broken:
    proc: subprocess.CompletedProcess
    out: Path
    fired: dict[str, list[dict]]  # alert -> the labels of each firing instance


BROKEN_ALERTS = ("HarnessQuantizedAccuracyRegression", "HarnessSlaFailed", "HarnessAlertStorm", "HarnessCellsFailing")


@pytest.fixture(scope="module")
def broken(stack: Stack) -> Broken:
    """The release that breaks three things at once: a pruned re-quantized build, a storming policy, a cell too big;
    and the alerts Prometheus fires on its verdicts."""
    proc, out = stack.run("broken", scenario([PRUNED_BUILD, TOO_BIG], STORM))
    fired = {}
    for alert in BROKEN_ALERTS:
        stack.prom.wait_firing(alert, timeout_s=20, scenario="deploy")
        # the verdicts as the textfile keeps them (the run's own exporter went with the run)
        fired[alert] = [a["labels"] for a in stack.prom.firing(alert) if a["labels"].get("job", TEXTFILE_JOB) == TEXTFILE_JOB]
    return Broken(proc, out, fired)


@dataclass
class Fixed:
    proc: subprocess.CompletedProcess
    out: Path
    recovered_s: dict[str, float]


def _recovered(stack: Stack) -> dict[str, bool]:
    """Each playbook's recovery as Prometheus sees it: its alert quiet AND the fixed run's figure back, in bounds."""
    job = f'job="{TEXTFILE_JOB}"'
    delta = stack.value(f'harness_nab_standard_delta_pct{{{job},cell="{PREVIOUS_CELL}"}} > -5')
    storm = stack.value(f'harness_policy_alerts_per_1k_events{{{job},policy="fixed"}} <= 10')
    sla = stack.value(f'harness_sla_ok{{{job},cell="{PREVIOUS_CELL}",objective="max_quantized_loss_pct"}} == 1')
    return {"accuracy-regression": bool(delta) and not stack.prom.firing("HarnessQuantizedAccuracyRegression"),
            "sla-failed": bool(sla) and not stack.prom.firing("HarnessSlaFailed"),
            "alert-storm": len(storm) == 2 and not stack.prom.firing("HarnessAlertStorm")}


@pytest.fixture(scope="module")
def fixed(stack: Stack, broken) -> Fixed:
    """The documented fixes in one release: the previous build, the recommended policy, no cell the cluster cannot
    hold. Recovery is timed from the start of the fix until Prometheus sees each playbook's figure in bounds."""
    started = time.monotonic()
    proc, out = stack.run("fixed", scenario([PREVIOUS_BUILD], RECOMMENDED))
    recovered: dict[str, float] = {}
    while len(recovered) < 3 and time.monotonic() - started < 240:
        for name, ok in _recovered(stack).items():
            if ok and name not in recovered:
                recovered[name] = time.monotonic() - started
        time.sleep(0.3)
    return Fixed(proc, out, recovered)


def table(out: Path, name: str = "table.csv") -> list[dict[str, str]]:
    return list(csv.DictReader((out / name).read_text().splitlines()))


def test_a_cell_the_cluster_cannot_place_fires_cells_failing(stack: Stack, broken: Broken) -> None:
    assert broken.proc.returncode == 1, broken.proc.stderr[-3000:]
    failed = [r for r in table(broken.out) if r["status"] != "ok"]
    assert [r["cell"] for r in failed] == ["ae.onnxruntime-fp32.threads-4"]
    assert "needs 4 CPUs on one node; the largest node has 2" in failed[0]["error"]
    assert [a["playbook"] for a in broken.fired["HarnessCellsFailing"]] == ["cells-failing"]


def test_accuracy_regression_after_requantizing(stack: Stack, broken: Broken, fixed: Fixed) -> None:
    proc, out = broken.proc, broken.out
    row = {r["cell"]: r for r in table(out)}[PRUNED_CELL]
    assert row["gate"].startswith("FAIL: loses") and float(row["nab_standard_delta_pct"]) < -10, row
    assert row["sla"].startswith("FAIL: max_quantized_loss_pct"), row["sla"]
    assert f"failed their SLA: {PRUNED_CELL}" in proc.stderr, proc.stderr[-2000:]  # --fail-on-sla
    assert [(a["cell"], a["objective"]) for a in broken.fired["HarnessSlaFailed"]] == [(PRUNED_CELL, "max_quantized_loss_pct")]
    assert [a["cell"] for a in broken.fired["HarnessQuantizedAccuracyRegression"]] == [PRUNED_CELL]
    # the fix: the previous build, rerun; its gate no longer names a loss, and compare flags the pruned build
    assert fixed.proc.returncode == 0, fixed.proc.stderr[-3000:]
    good = {r["cell"]: r for r in table(fixed.out)}[PREVIOUS_CELL]
    assert "loses" not in good["gate"] and abs(float(good["nab_standard_delta_pct"])) < 5 and good["sla"] == "PASS", good
    cmp = stack.harness("compare", fixed.out, out, "--match", f"{PREVIOUS_CELL}={PRUNED_CELL}", "--json")
    assert cmp.returncode == 1, cmp.stderr
    verdicts = {v["metric"]: v for v in json.loads(cmp.stdout)["verdicts"] if v["cell"] == PRUNED_CELL}
    assert verdicts["nab_standard"]["verdict"] == "regressed" and verdicts["nab_standard"]["delta_pct"] < -10
    assert "accuracy-regression" in fixed.recovered_s, "the alert did not clear with the previous build's figures back"
    assert "sla-failed" in fixed.recovered_s, "HarnessSlaFailed did not clear with the previous build's verdict back"
    print(f"RECOVERY accuracy-regression {fixed.recovered_s['accuracy-regression']:.1f} s")
    print(f"RECOVERY sla-failed (max_quantized_loss_pct) {fixed.recovered_s['sla-failed']:.1f} s")


def test_alert_storm_from_a_low_quantile(stack: Stack, broken: Broken, fixed: Fixed) -> None:
    storm = [r for r in table(broken.out, "thresholds.csv") if r["policy"] == "rolling_quantile"]
    assert len(storm) == 2 and all(float(r["alerts_per_1k"]) > 50 for r in storm), storm
    assert sorted(a["policy"] for a in broken.fired["HarnessAlertStorm"]) == ["rolling_quantile"] * 2
    # the fix: the thresholds table's recommendation (the best cross-validated policy), within the budget
    policies = [r for r in table(fixed.out, "thresholds.csv") if r["policy"] != "optimized"]
    assert {r["policy"] for r in policies} == {"fixed"} and all(float(r["alerts_per_1k"]) <= 10 for r in policies), policies
    assert "alert-storm" in fixed.recovered_s, "the alert did not clear with the recommended policy's rate back"
    assert stack.value(f'harness_cells_finished_total{{job="{TEXTFILE_JOB}",status="failed"}}') == [0.0]
    assert [r["status"] for r in table(fixed.out)] == ["ok", "ok"]  # every cell of the fixed release, once
    print(f"RECOVERY alert-storm {fixed.recovered_s['alert-storm']:.1f} s")


def test_reviewer_verdicts_days_late(stack: Stack, fixed: Fixed) -> None:
    run, metrics = fixed.out, stack.textfiles / "harness-feedback-deploy.prom"
    evaluated = stack.harness("feedback", "evaluate", run, "--delays", "1h,1d,3d")
    assert evaluated.returncode == 0, evaluated.stderr
    rows = [r for r in table(run / "review", "feedback.csv") if r["cell"] == "ae.torch-fp32"]
    buys = {r["delay"]: (float(r["nab_delta"]), float(r["fp_events_change_pct"])) for r in rows if r["delay"]}
    assert buys["1h"][1] < 0 <= buys["1h"][0], buys  # on time, feedback cuts false alarms at no NAB cost
    assert buys["1d"][1] < 0 <= buys["1d"][0] and buys["3d"] == (0.0, 0.0), buys  # a day late it still helps; three, nothing
    late = stack.harness("feedback", "simulate", run, "--delay", "3d")
    status = stack.harness("feedback", "status", run, "--metrics-file", metrics)
    assert late.returncode == 0 and status.returncode == 0, late.stderr + status.stderr
    assert "LATE" in status.stdout, status.stdout
    stack.prom.wait_firing("HarnessFeedbackLate", timeout_s=20, cell="ae.torch-fp32")
    started = time.monotonic()  # the fix: verdicts back within the delay feedback helps at
    caught_up = stack.harness("feedback", "simulate", run, "--delay", "1h", "--replace")
    status = stack.harness("feedback", "status", run, "--metrics-file", metrics)
    assert caught_up.returncode == 0 and "LATE" not in status.stdout, status.stdout
    stack.prom.wait_resolved("HarnessFeedbackLate", timeout_s=20)
    ages = stack.value(f'harness_feedback_oldest_pending_age_seconds{{job="{TEXTFILE_JOB}"}}')
    assert len(ages) == 2 and max(ages) <= 3600, ages
    print(f"RECOVERY feedback-late {time.monotonic() - started:.1f} s")
