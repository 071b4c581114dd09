"""`harness run` on real Ray: a private local Ray, a shared `ray start --head` cluster, and `ray job submit`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report.summary import for_folder
from harness.results.schema import SCHEMA_VERSION

from conftest import REPO, harness_cmd, needs_netns, run_scenario

pytestmark = needs_netns

BASELINE_CELLS = ["null", "random", "windowedGaussian.window-288", "windowedGaussian.window-2016"]
METRIC_COLUMNS = [
    "nab_standard", "nab_reward_low_FP_rate", "nab_reward_low_FN_rate",
    "f1", "alert_precision", "recall", "latency_mean_s", "fp_events",
]


def read_table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "table.csv", keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def baselines_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The baseline scenario (scenarios/baselines.yaml): three baselines, scored."""
    return run_scenario(tmp_path_factory, "baselines")


def test_baselines_writes_table_manifest_and_prints_table(baselines_run):
    proc, out = baselines_run
    table = read_table(out)
    assert table["cell"].tolist() == BASELINE_CELLS
    assert all(re.fullmatch(r"[A-Za-z0-9.-]+", c) for c in table["cell"])
    assert set(table["status"]) == {"ok"}
    assert table[METRIC_COLUMNS].notna().drop(columns="latency_mean_s").all().all()
    assert (table.loc[table["cell"] == "null", "nab_standard"] == 0).all()
    printed = proc.stdout.split("results: ")[0]  # the terminal summary (harness.report.summary), then the folder
    assert printed == for_folder(out) and f"table: {out / 'table.md'}" in printed
    assert all(len(line) <= 120 for line in printed.splitlines()) and "0.99" not in printed  # no 16-digit thresholds

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["cells"] == BASELINE_CELLS
    assert manifest["ray"]["cluster_resources"]["CPU"] >= 1
    assert manifest["ray"]["address"] == "local"
    assert "name: baselines" in manifest["scenario"]["given"]
    assert manifest["scenario"]["resolved"]["detectors"][2]["grid"] == {"window": [288, 2016]}
    assert manifest["started_at"] and manifest["finished_at"] and manifest["resumes"] == []
    env = manifest["environment"]
    for key in ("code", "packages", "python", "cpu_model"):
        assert key in env
    assert env["packages"]["ray"] == "2.60.0" and len(env["code"]["tree_sha256"]) == 64
    assert len(manifest["corpus"]["fingerprint"]) == 64 and manifest["corpus"]["files"] == 13
    record = json.loads((out / "cells" / "random" / "result.json").read_text())
    assert record["schema_version"] == SCHEMA_VERSION and record["status"] == "ok" and list(record["tasks"]) == ["score"]
    node = record["tasks"]["score"]["node"]  # where the task ran
    assert node["node_id"] and node["hostname"] and node["cores"] >= 1 and node["memory_bytes"] > 0 and node["arch"]


def test_baselines_outputs_rescore_to_the_table(baselines_run, synthetic_root):
    """Every NAB number in the table is reproduced from <out>/nab/<cell>/ by the standalone scorer."""
    _, out = baselines_run
    table = read_table(out).set_index("cell")
    labelled = json.loads((synthetic_root / "labels" / "combined_windows.json").read_text())
    for cell in BASELINE_CELLS:
        files = sorted(p.relative_to(out / "nab" / cell).as_posix() for p in (out / "nab" / cell).rglob("*.csv"))
        assert files == sorted(f"{n.split('/')[0]}/{cell}_{n.split('/')[1]}" for n in labelled)
        proc = subprocess.run(
            harness_cmd("nab", "score", str(out / "nab" / cell), "--corpus", str(synthetic_root), "--optimize", "--json"),
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        scored = json.loads(proc.stdout)
        assert scored["detector"] == cell
        for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
            assert scored["profiles"][profile]["score"] == pytest.approx(table.loc[cell, f"nab_{profile}"], abs=1e-9)


def test_baselines_leaderboard_and_plot(baselines_run):
    _, out = baselines_run
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    assert board["rank"].tolist() == list(range(1, len(BASELINE_CELLS) + 1))
    assert board["nab_standard"].is_monotonic_decreasing
    assert set(board["detector"]) == set(BASELINE_CELLS)
    assert (out / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = subprocess.run(harness_cmd("leaderboard", str(out)), capture_output=True, text=True, cwd=REPO)
    assert shown.returncode == 0 and "| rank |" in shown.stdout


def test_baselines_recall_by_kind_adds_up_to_recall(baselines_run):
    """The embedded corpus names its windows' kinds: the table's recall per kind adds up to its recall."""
    _, out = baselines_run
    table = read_table(out).set_index("cell")
    for cell in BASELINE_CELLS[1:]:
        parts = [re.fullmatch(r"(\w+) (\d+)/(\d+)", p.strip()).groups() for p in table.loc[cell, "recall_by_kind"].split(",")]
        assert {k for k, _, _ in parts} == {"spike", "level_shift", "drift", "flatline", "noise_burst", "frequency_change"}
        detected, windows = sum(int(d) for _, d, _ in parts), sum(int(n) for _, _, n in parts)
        assert windows == 16 and detected / windows == pytest.approx(table.loc[cell, "recall"])


def test_baselines_review_loop(baselines_run, cli_env, tmp_path):
    """The run's review log: each cell's alerts and missed windows; Label Studio out and back; simulated
    reviewers; a replayed log decides exactly as the simulated reviewer it recorded."""
    from harness.results.review_log import parse

    from conftest import harness, one_error_line

    run = tmp_path / "run"
    shutil.copytree(baselines_run[1], run)
    log = run / "review" / "log.csv"
    entries = parse(log.read_text(), log)
    assert {e.cell for e in entries} == set(BASELINE_CELLS) and not any(e.judged for e in entries)
    for cell in BASELINE_CELLS:
        at = json.loads((run / "cells" / cell / "result.json").read_text())["tasks"]["score"]["result"]["nab"]["detection"]["standard"]
        assert sum(e.cell == cell and e.kind == "missed" for e in entries) == at["windows"] - at["detected_windows"]

    proc = harness(cli_env, "feedback", "export", run)
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads((run / "review" / "labelstudio-tasks.json").read_text())
    assert len(tasks) == len(entries) and "<Choices name=\"verdict\"" in (run / "review" / "labelstudio-config.xml").read_text()
    annotated = [{**t, "annotations": [{"was_cancelled": False, "result": [
        {"from_name": "verdict", "to_name": "summary", "type": "choices", "value": {"choices": ["normal"]}}]}]} for t in tasks]
    (tmp_path / "export.json").write_text(json.dumps(annotated))
    proc = harness(cli_env, "feedback", "import", run, tmp_path / "export.json", "--delay", "1d")
    assert proc.returncode == 0 and f"{len(entries)} verdict(s) imported" in proc.stdout, proc.stderr
    imported = parse(log.read_text(), log)
    assert all(e.verdict == "normal" and e.reviewer == "label-studio" for e in imported)
    first = next(e for e in imported if e.kind == "alert")
    assert (np.datetime64(first.verdict_at.replace(" ", "T")) - np.datetime64(first.time.replace(" ", "T"))) == np.timedelta64(1, "D")

    foreign = [{**annotated[0], "data": {**annotated[0]["data"], "review_id": "other|x.csv|alert|1"}}]
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    before = log.read_bytes()
    assert "entries this run's log does not have" in one_error_line(harness(cli_env, "feedback", "import", run, tmp_path / "foreign.json"))
    assert log.read_bytes() == before

    proc = harness(cli_env, "feedback", "simulate", run, "--delay", "1d", "--replace")
    assert proc.returncode == 0, proc.stderr
    simulated = parse(log.read_text(), log)
    assert {e.verdict for e in simulated if e.kind == "missed"} == {"anomaly"} and {e.verdict for e in simulated} == {"anomaly", "normal"}
    proc = harness(cli_env, "feedback", "evaluate", run, "--delays", "1d")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(run / "review" / "feedback.csv", keep_default_na=False)
    for cell in BASELINE_CELLS:
        rows = table[table["cell"] == cell]
        assert rows["feedback"].str.split(" ").str[0].tolist() == ["none", "review", "simulated"]
        replayed, live = rows.iloc[1], rows.iloc[2]
        assert live["delay"] == "1d" and replayed["nab_standard"] == live["nab_standard"] and replayed["fp_events"] == live["fp_events"]
        assert live["fp_events"] <= rows.iloc[0]["fp_events"]  # silencing never adds a false alarm
    assert "not a run folder" in one_error_line(harness(cli_env, "feedback", "evaluate", tmp_path / "nowhere"))


def write_scenario(path: Path, detectors: str) -> Path:
    path.write_text(f"name: failing\ncorpus:\n  synthetic: {{seed: 3, rows: 1200}}\ndetectors:\n{detectors}")
    return path


def test_failed_cell_is_recorded_and_resume_finishes_the_run(ray_cluster, tmp_path):
    scenario = write_scenario(
        tmp_path / "s.yaml",
        '  - type: "null"\n  - type: userdet:Exploding\n  - type: userdet:LastValueJump\n',
    )
    out = tmp_path / "run"
    env = {"PYTHONPATH": str(REPO / "tests")}
    cmd = harness_cmd("run", str(scenario), "--out", str(out), "--address", ray_cluster.gcs_address)
    first = ray_cluster_run(ray_cluster, cmd, env)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Exploding" in first.stderr.splitlines()[-1]
    table = read_table(out).set_index("cell")
    assert table.loc["Exploding", "status"] == "failed"
    assert "RuntimeError: boom on synth" in table.loc["Exploding", "error"]
    assert table.loc["null", "status"] == "ok" and table.loc["LastValueJump", "status"] == "ok"
    assert table.loc["LastValueJump", "nab_standard"] > 0
    failed = json.loads((out / "cells" / "Exploding" / "result.json").read_text())
    assert failed["status"] == "failed" and "Traceback" in failed["tasks"]["score"]["traceback"]
    assert not (out / "nab" / "Exploding").exists()
    report = out / "report.html"  # a run with a failed cell still ends with its report
    assert 'id="verdicts"' in report.read_text()
    report.unlink()

    # An interruption loses a cell: --resume reruns it (and the failed one) and leaves finished cells alone.
    (out / "cells" / "LastValueJump" / "result.json").unlink()
    kept = (out / "cells" / "null" / "result.json").stat().st_mtime_ns
    before = table.loc["LastValueJump", "nab_standard"]
    again = ray_cluster_run(ray_cluster, cmd + ["--resume"], env)
    assert again.returncode == 1, again.stderr[-3000:]
    assert (out / "cells" / "null" / "result.json").stat().st_mtime_ns == kept
    table = read_table(out).set_index("cell")
    assert table.loc["LastValueJump", "status"] == "ok"
    assert table.loc["LastValueJump", "nab_standard"] == pytest.approx(before, abs=1e-12)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert 'id="verdicts"' in report.read_text()  # --resume writes the report again


def ray_cluster_run(cluster, cmd, env):
    return cluster.run(cmd, timeout=300, env=env)


def test_ray_job_submit_runs_the_baselines(ray_cluster, tmp_path):
    """Inside a submitted job, `harness run` joins the job's cluster without being told (--address)."""
    out = tmp_path / "job-out"
    proc = ray_cluster.run(
        [
            "ray", "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", ".", "--",
            "harness", "run", "scenarios/baselines.yaml", "--out", str(out),
        ],
        timeout=400,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout
    table = read_table(out)
    assert table["cell"].tolist() == BASELINE_CELLS
    assert set(table["status"]) == {"ok"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ray"]["address"] == "auto"
    assert manifest["ray"]["cluster_resources"]["CPU"] >= 2


def test_ray_job_submit_ships_user_detectors_and_the_model_cache(ray_cluster, tmp_path):
    """A user's detector package known to the driver only (PYTHONPATH of the entrypoint, not of the workers)
    reaches the workers as py_modules, HARNESS_CACHE reaches them too (the timing task reads back what the scoring
    task cached), and the manifest records the code's identity."""
    from harness.environment import tree_sha256

    pkgs = tmp_path / "pkgs"
    shutil.copytree(REPO / "tests" / "userdet", pkgs / "jobdet")
    # Ray names an uploaded package by its contents: a byte-identical copy of tests/userdet (shipped by another
    # test) would be unpacked under that name instead
    (pkgs / "jobdet" / "README").write_text("the user's own package, known to the job's driver only\n")
    scenario = tmp_path / "job.yaml"
    scenario.write_text(
        "name: job\ncorpus:\n  synthetic: {seed: 3, rows: 600}\ndetectors:\n"
        "  - type: jobdet:LinearForecaster\n    label: mine\n    params: {window: 8, epochs: 1}\n"
        "backends:\n  - {backend: torch}\n  - {backend: onnxruntime, precision: int8}\n"
        "timing: {batch: 16, warmup: 1, min_iterations: 5, min_duration_s: 0.0, rounds: 1}\n"
    )
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = ray_cluster.run(
        [
            "ray", "job", "submit", "--address", ray_cluster.dashboard_url, "--working-dir", ".", "--",
            "env", f"PYTHONPATH={pkgs}", f"HARNESS_CACHE={cache}",
            "python", "-m", "harness", "run", str(scenario), "--out", str(out),
        ],
        timeout=500,
    )
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "packaging.py" not in line)
    assert proc.returncode == 0, log[-5000:]
    table = read_table(out).set_index("cell")
    assert table.index.tolist() == ["mine.torch-fp32", "mine.onnxruntime-int8-dynamic"]
    assert set(table["status"]) == {"ok"}, table["error"].tolist()
    timed = json.loads((out / "cells" / "mine.onnxruntime-int8-dynamic" / "result.json").read_text())
    assert timed["tasks"]["timing"]["result"]["cache"] == "hit"
    assert any(cache.joinpath("models").rglob("*.onnx"))
    code = json.loads((out / "manifest.json").read_text())["environment"]["code"]
    assert code["tree_sha256"] == tree_sha256(REPO / "harness")  # the uploaded copy is this code
