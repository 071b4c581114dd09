"""A detector x backend x precision run on a real Ray cluster, with real ONNX Runtime and OpenVINO, on a small
synthetic corpus: every backend cell is scored and timed, the table compares each row with its torch fp32 row,
fp32 backends reproduce torch's per-row scores, and every NAB number can be re-scored from `<out>/nab/<cell>/`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, harness_cmd, needs_netns, ray_env

pytestmark = needs_netns

BACKENDS = """\
backends:
  - {backend: torch}
  - {backend: onnxruntime}
  - {backend: onnxruntime, precision: int8, quantization: dynamic}
  - {backend: onnxruntime, precision: int8, quantization: static}
  - {backend: openvino}
  - {backend: openvino, precision: int8}
  - {backend: openvino, precision: bf16}
  - {backend: onnxruntime, prune: structured, sparsity: 0.5, prune_epochs: 1}
  - {backend: onnxruntime, threads: 4}
"""
TOKENS = ["torch-fp32", "onnxruntime-fp32", "onnxruntime-int8-dynamic", "onnxruntime-int8-static", "openvino-fp32",
          "openvino-int8", "openvino-bf16", "onnxruntime-fp32.prune-structured.sparsity-0.5.prune-epochs-1",
          "onnxruntime-fp32.threads-4"]


@pytest.fixture(scope="module")
def backend_run(ray_cluster, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp = tmp_path_factory.mktemp("quant")
    scenario = tmp / "q.yaml"
    scenario.write_text(
        "name: q\ncorpus:\n  synthetic: {seed: 3, rows: 600}\ndetectors:\n"
        "  - type: autoencoder\n    label: ae\n    params: {window: 8, hidden: 8, bottleneck: 4, epochs: 3}\n"
        "  - type: userdet:LinearForecaster\n    label: mine\n    params: {window: 8, epochs: 2}\n"
        + BACKENDS
        + "timing: {batch: 64, warmup: 2, min_iterations: 20, min_duration_s: 0.05, rounds: 2, sweep: [8]}\n"
    )
    out = tmp / "run"
    proc = subprocess.run(
        ray_cluster.cmd(harness_cmd("run", str(scenario), "--out", str(out), "--address", ray_cluster.gcs_address)),
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env=ray_env(HARNESS_CACHE=str(tmp / "cache"), PYTHONPATH=str(REPO / "tests")),
    )
    return proc, out


def table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "table.csv", keep_default_na=False, na_values=[""]).set_index("cell")


def test_every_backend_cell_is_scored_timed_and_compared(backend_run) -> None:
    proc, out = backend_run
    assert proc.returncode == 1, proc.stderr[-3000:]  # the threads-4 cells cannot be placed on a 2-CPU cluster
    df = table(out)
    assert df.index.tolist() == [f"{label}.{t}" for label in ("ae", "mine") for t in TOKENS]
    for label in ("ae", "mine"):
        bad = df.loc[f"{label}.onnxruntime-fp32.threads-4"]
        assert bad["status"] == "failed" and "needs 4 CPUs on one node; the largest node has 2" in bad["error"]
    ok = df[~df.index.str.endswith("threads-4")]
    assert set(ok["status"]) == {"ok"}, ok[["status", "error"]]
    assert ok["backend"].tolist() == ["torch", "onnxruntime", "onnxruntime", "onnxruntime", "openvino", "openvino", "openvino",
                                      "onnxruntime"] * 2
    assert ok["precision"].tolist() == ["fp32", "fp32", "int8", "int8", "fp32", "int8", "bf16", "fp32"] * 2
    pruned = ok.loc["mine.onnxruntime-fp32.prune-structured.sparsity-0.5.prune-epochs-1"]
    assert pruned["pruning"] == "structured 0.5" and 0 < pruned["weights_nonzero"] < 8 * 8 + 8 + 8 + 1
    for col in ("nab_standard", "f1", "alert_precision", "latency_b1_p50_ms", "latency_b1_p95_ms", "latency_bN_p50_ms",
                "latency_bN_p95_ms", "throughput_eps", "speedup_vs_fp32", "speedup_vs_backend_fp32", "throughput_spread_pct",
                "model_bytes"):
        assert ok[col].notna().all(), col
    assert (ok["latency_bN_p95_ms"] >= ok["latency_bN_p50_ms"]).all() and (ok["batch"] == 64).all()
    # the figures themselves (deltas, speedups, the gate's verdicts) are checked against hand-computed constants
    # in test_report.py; here, that a real run fills them where they belong
    for cell, row in ok.iterrows():
        if cell.endswith(".torch-fp32"):  # each model's own reference
            assert row["nab_standard_delta_pct"] == 0 and row["speedup_vs_fp32"] == 1 and row["speedup_vs_backend_fp32"] == 1
        assert row["speedup_vs_fp32"] > 0 and row["throughput_eps"] > 0
        if row["precision"] != "fp32" or not pd.isna(row["pruning"]):
            for gate in ("gate", "gate_vs_backend"):
                assert row[gate] == "PASS" or row[gate].startswith("FAIL: "), (cell, gate, row[gate])
        else:
            assert pd.isna(row["gate"]) and pd.isna(row["gate_vs_backend"]), cell  # empty in the csv
    assert "mine.openvino-int8" in (out / "table.md").read_text()
    assert (out / "crossover.png").read_bytes()[:4] == b"\x89PNG"  # timing.sweep: the precisions' crossover plot


def test_result_records_timing_threads_and_backend_settings(backend_run) -> None:
    _, out = backend_run
    for token in TOKENS[:-1]:
        rec = json.loads((out / "cells" / f"ae.{token}" / "result.json").read_text())
        assert rec["kinds"] == ["score", "timing"] and rec["status"] == "ok"
        score, timing = rec["tasks"]["score"]["result"], rec["tasks"]["timing"]["result"]
        assert rec["tasks"]["timing"]["node"]["node_id"] == rec["tasks"]["score"]["node"]["node_id"]  # one node here
        assert timing["settings"] == {"batch": 64, "warmup": 2, "min_iterations": 20, "min_duration_s": 0.05, "rounds": 2, "sweep": [8]}
        assert timing["sweep"]["8"]["batch"] == 8
        assert len(timing["batchN"]["rounds_p50_ms"]) == 2 and timing["batchN"]["iterations"] >= 40
        assert timing["exclusive"] is True  # timed by its own task, alone on the node
        if not token.startswith("torch"):
            assert timing["cache"] == "hit"  # the artefacts the cell prepared, read back from the cache
        assert timing["batch1"]["batch"] == 1 and timing["batchN"]["batch"] == 64
        assert timing["batch1"]["iterations"] >= 20 and timing["batchN"]["duration_s"] >= 0.05
        for key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "spread_pct"):
            assert key in timing["batchN"], key
        info = score["backend_info"]
        assert info["backend"] == rec["cell"]["backend"]["backend"] and info["threads"] == 1
        assert info["models_prepared"] == 13  # one trained model per corpus file
        assert score["model_bytes"] == info["size_bytes"] > 0
        if token.endswith("fp32"):
            assert info["check_max_abs_err"] <= 1e-4, token
        if token.startswith("openvino"):
            assert info["inference_precision"] == {"bf16": "bf16"}.get(token.split("-")[1], "f32")  # fp32: not the CPU's bf16 default
    static = json.loads((out / "cells" / "ae.onnxruntime-int8-static" / "result.json").read_text())
    assert static["tasks"]["score"]["result"]["backend_info"]["spec"]["quantization"] == "static"


def scores(out: Path, cell: str) -> np.ndarray:
    files = sorted((out / "nab" / cell).rglob("*.csv"))
    assert len(files) == 13
    return np.concatenate([pd.read_csv(f)["anomaly_score"].to_numpy() for f in files])


def test_fp32_backends_reproduce_torch_scores_and_int8_stays_close(backend_run) -> None:
    _, out = backend_run
    torch_scores = scores(out, "ae.torch-fp32")
    for cell in ("ae.onnxruntime-fp32", "ae.openvino-fp32"):
        np.testing.assert_allclose(scores(out, cell), torch_scores, atol=1e-4, err_msg=cell)
    for cell in ("ae.onnxruntime-int8-dynamic", "ae.onnxruntime-int8-static", "ae.openvino-int8"):
        s = scores(out, cell)
        assert not np.array_equal(s, torch_scores), f"{cell}: int8 scores identical to fp32: was it quantized?"
        assert np.corrcoef(s, torch_scores)[0, 1] > 0.9, cell


def test_int8_numbers_rescore_from_the_run_folder(backend_run) -> None:
    _, out = backend_run
    corpus = Path(json.loads((out / "manifest.json").read_text())["corpus"]["root"])
    for cell in ("ae.onnxruntime-int8-static", "ae.openvino-int8"):
        proc = subprocess.run(
            harness_cmd("nab", "score", str(out / "nab" / cell), "--corpus", str(corpus), "--optimize", "--json"),
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["profiles"]["standard"]["score"] == pytest.approx(
            table(out).loc[cell, "nab_standard"], abs=1e-9
        )


def test_resume_times_a_cell_whose_timing_never_ran(backend_run, ray_cluster, tmp_path) -> None:
    """A run interrupted before a cell's exclusive timing leaves the cell pending with its scoring done:
    --resume runs that timing only, from what the scoring handed over, and leaves the scoring record alone."""
    proc, out = backend_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    left = run / "cells" / "ae.openvino-int8" / "result.json"
    record = json.loads(left.read_text())
    del record["tasks"]["timing"]
    left.write_text(json.dumps(record))
    shutil.rmtree(run / "nab" / "ae.openvino-int8")  # a cell that is not ok has no NAB-layout scores
    kept = (run / "cells" / "ae.torch-fp32" / "result.json").stat().st_mtime_ns
    scenario = json.loads((run / "manifest.json").read_text())["scenario"]["file"]
    again = subprocess.run(
        ray_cluster.cmd(harness_cmd("run", scenario, "--out", str(run), "--address", ray_cluster.gcs_address, "--resume")),
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env=ray_env(HARNESS_CACHE=str(Path(scenario).parent / "cache"), PYTHONPATH=str(REPO / "tests")),
    )
    assert again.returncode == 1, again.stderr[-3000:]  # the threads-4 cell still cannot run
    df = table(run)
    assert df.loc["ae.openvino-int8", "status"] == "ok" and df.loc["ae.openvino-int8", "latency_b1_p50_ms"] > 0
    assert (run / "cells" / "ae.torch-fp32" / "result.json").stat().st_mtime_ns == kept
    resumed = json.loads(left.read_text())
    assert resumed["tasks"]["score"] == record["tasks"]["score"]  # not rescored
    assert resumed["tasks"]["timing"]["result"]["cache"] == "hit"
    assert len(list((run / "nab" / "ae.openvino-int8").rglob("*.csv"))) == 13
    assert df.loc["ae.openvino-int8", "nab_standard"] == pytest.approx(table(out).loc["ae.openvino-int8", "nab_standard"], abs=1e-9)
