"""The comparison table of a backend run, from typed cell results as the run folder holds them: deltas and
speedups against the same model's torch fp32 row, the INT8 gate (less than 5% of NAB standard lost, at least 2x
the throughput) and its n/a cases, columns described once, thresholds printed with every digit."""

from __future__ import annotations

import math
import re

import pytest

from harness.report.tables import build_table, markdown
from harness.results.columns import COLUMNS
from harness.results.schema import (
    CellResult, LatencyFigures, NabResult, ScoreResult, Status, TaskRecord, TimingResult,
)
from harness.scenario import Cell
from harness.scoring.nab import DetectionMetrics, ProfileScore

from conftest import REPO

pytestmark = pytest.mark.timeout(60)  # tables and plots from hand-made results

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def latency(events_per_s: float, batch: int) -> LatencyFigures:
    ms = 1000.0 * batch / events_per_s if events_per_s else math.inf
    return LatencyFigures(
        batch=batch, iterations=100, duration_s=1.0, mean_ms=ms, stdev_ms=0.1, min_ms=ms, p50_ms=ms, p90_ms=ms,
        p95_ms=1.1 * ms, p99_ms=1.2 * ms, max_ms=1.3 * ms, rounds_p50_ms=[ms], spread_pct=0.0, events_per_s=events_per_s,
    )


def result(cell_id: str, backend: str | None, precision: str, nab: float, eps: float, b1_eps: float = 100.0,
           status: str = "ok", params: dict | None = None, detector: str = "ae", threshold: float = 0.9,
           timed: bool = True, prune: dict | None = None, sweep: dict[int, float] | None = None) -> CellResult:
    spec = {"backend": backend, "precision": precision} if backend else None
    cell = Cell(id=cell_id, detector=detector, type="autoencoder", params=params or {"window": 8}, axes={}, backend=spec,
                pruning=prune)
    kinds = ["score", "timing"] if backend else ["score"]
    if status == "failed":
        return CellResult(cell=cell, kinds=kinds, tasks={"score": TaskRecord(kind="score", status=Status.FAILED, error="RuntimeError: boom")})
    at = DetectionMetrics(threshold, 0.75, 0.25, 0.5, 3, 4, 3, 10.0, 10.0, 60.0, 60.0, 0.3, 0.4, 0.34)
    nab_result = NabResult(
        profiles={p: ProfileScore(nab, 1.0, threshold, 3, 5, 1) for p in PROFILES},
        detection={"standard": at, "best_f1": at},
    )
    score = ScoreResult(nab=nab_result, files=2, rows=100, probation_percent=0.15, detect_s=1.0, model_bytes=1234 if backend else None)
    tasks = {"score": TaskRecord(kind="score", status=Status.OK, seconds=1.0, result=score)}
    if backend and timed:
        timing = TimingResult(batch1=latency(b1_eps, 1), batchN=latency(eps, 256), file="c/f.csv", settings={}, exclusive=True,
                              sweep={b: latency(e, b) for b, e in (sweep or {}).items()})
        tasks["timing"] = TaskRecord(kind="timing", status=Status.OK, seconds=2.0, result=timing)
    return CellResult(cell=cell, kinds=kinds, tasks=tasks)


def test_deltas_speedups_and_gate_per_int8_row() -> None:
    df = build_table([
        result("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0),
        result("ae.ort-int8", "onnxruntime", "int8", 48.0, 2500.0, b1_eps=300.0),  # -4%, 2.5x: PASS
        result("ae.ov-int8", "openvino", "int8", 45.0, 3000.0),  # -10%: FAIL on accuracy
        result("ae.ort-int8-static", "onnxruntime", "int8", 50.5, 1500.0),  # +1%, 1.5x: FAIL on speed
        result("ae.ov-fp32", "openvino", "fp32", 50.0, 1200.0),
    ]).set_index("cell")
    assert df.loc["ae.torch-fp32", ["nab_standard_delta_pct", "speedup_vs_fp32", "speedup_b1_vs_fp32"]].tolist() == [0, 1, 1]
    assert df.loc["ae.ort-int8", "nab_standard_delta_pct"] == pytest.approx(-4.0)
    assert df.loc["ae.ort-int8", "speedup_vs_fp32"] == pytest.approx(2.5)
    assert df.loc["ae.ort-int8", "speedup_b1_vs_fp32"] == pytest.approx(3.0)
    assert df.loc["ae.ort-int8", "gate"] == "PASS"
    assert df.loc["ae.ov-int8", "gate"] == "FAIL: loses 10.0% nab_standard (limit 5%)"
    assert df.loc["ae.ort-int8-static", "gate"] == "FAIL: 1.50x faster (needs 2x)"
    assert df.loc["ae.ov-fp32", "gate"] == "" and df.loc["ae.torch-fp32", "gate"] == ""
    assert df.loc["ae.ov-fp32", "precision"] == "fp32" and df.loc["ae.ov-fp32", "alert_precision"] == 0.25
    assert df.loc["ae.ort-int8", "latency_bN_p50_ms"] == pytest.approx(1000.0 * 256 / 2500.0)
    assert df.loc["ae.ort-int8", "latency_bN_p99_ms"] == pytest.approx(1.2 * 1000.0 * 256 / 2500.0)
    assert df.loc["ae.ort-int8", "model_bytes"] == 1234
    assert df.loc["ae.ov-int8", "speedup_vs_backend_fp32"] == pytest.approx(2.5)  # vs ae.ov-fp32
    assert df.loc["ae.ov-fp32", "speedup_vs_backend_fp32"] == 1
    assert math.isnan(df.loc["ae.ort-int8", "speedup_vs_backend_fp32"])  # no onnxruntime fp32 row
    assert list(df.reset_index().columns) == [c.name for c in COLUMNS if not (c.target or c.anomaly_kinds or c.sla)]  # every described column, in order (no targets, kinds or SLA here)


def test_gate_vs_backend_measures_what_the_precision_itself_buys() -> None:
    """`gate` compares speed with torch fp32, `gate_vs_backend` with the row's own runtime's fp32; accuracy is
    always against torch fp32; bf16 and fp16 rows are gated like int8."""
    df = build_table([
        result("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0),
        result("ae.ort-fp32", "onnxruntime", "fp32", 50.0, 3000.0),
        result("ae.ort-int8", "onnxruntime", "int8", 49.0, 3300.0),  # 3.3x torch, 1.1x its runtime
        result("ae.ov-fp32", "openvino", "fp32", 50.0, 1000.0),
        result("ae.ov-bf16", "openvino", "bf16", 49.5, 2100.0),  # 2.1x both
        result("ae.ov-fp16", "openvino", "fp16", 40.0, 2100.0),  # -20%
        result("ae.torch-bf16", "torch", "bf16", 50.0, 500.0),
        result("lstm.torch-fp32", "torch", "fp32", 50.0, 1000.0, detector="lstm"),
        result("lstm.ort-int8", "onnxruntime", "int8", 50.0, 4000.0, detector="lstm"),  # no onnxruntime fp32 row
    ]).set_index("cell")
    assert df.loc["ae.ort-int8", ["gate", "gate_vs_backend"]].tolist() == ["PASS", "FAIL: 1.10x faster (needs 2x)"]
    assert df.loc["ae.ov-bf16", ["gate", "gate_vs_backend"]].tolist() == ["PASS", "PASS"]
    assert df.loc["ae.ov-fp16", "gate_vs_backend"] == "FAIL: loses 20.0% nab_standard (limit 5%)"
    assert df.loc["ae.torch-bf16", ["gate", "gate_vs_backend"]].tolist() == ["FAIL: 0.50x faster (needs 2x)"] * 2
    assert df.loc["lstm.ort-int8", ["gate", "gate_vs_backend"]].tolist() == ["PASS", "n/a: no onnxruntime fp32 row to compare with"]
    assert (df.loc[["ae.torch-fp32", "ae.ort-fp32", "ae.ov-fp32"], ["gate", "gate_vs_backend"]] == "").all().all()
    assert df.loc["ae.ov-bf16", "speedup_vs_backend_fp32"] == pytest.approx(2.1)


def test_pruned_rows_are_compared_with_the_unpruned_model() -> None:
    """A pruned row (any precision) gets its NAB delta and speedups against the same model unpruned: the torch fp32
    row and its runtime's fp32 row; a pruned fp32 row is never anyone's reference."""
    half = {"prune": "structured", "sparsity": 0.5}
    df = build_table([
        result("ae.torch-fp32.pruned", "torch", "fp32", 45.0, 1800.0, prune=half),  # listed first on purpose
        result("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0),
        result("ae.ort-fp32", "onnxruntime", "fp32", 50.0, 2000.0),
        result("ae.ort-fp32.pruned", "onnxruntime", "fp32", 49.0, 4400.0, prune=half),
        result("ae.ort-int8.pruned", "onnxruntime", "int8", 48.0, 6000.0, prune={"prune": "magnitude", "sparsity": 0.9}),
    ]).set_index("cell")
    assert df.loc["ae.torch-fp32.pruned", "nab_standard_delta_pct"] == pytest.approx(-10.0)
    assert df.loc["ae.torch-fp32.pruned", "gate"] == "FAIL: loses 10.0% nab_standard (limit 5%); 1.80x faster (needs 2x)"
    assert df.loc["ae.ort-fp32.pruned", "speedup_vs_backend_fp32"] == pytest.approx(2.2)
    assert df.loc["ae.ort-fp32.pruned", ["gate", "gate_vs_backend"]].tolist() == ["PASS", "PASS"]
    assert df.loc["ae.ort-int8.pruned", ["gate", "gate_vs_backend"]].tolist() == ["PASS", "PASS"]
    assert df.loc["ae.ort-int8.pruned", "pruning"] == "magnitude 0.9" and df.loc["ae.torch-fp32", "pruning"] == ""
    assert df.loc["ae.torch-fp32", "speedup_vs_fp32"] == 1 and df.loc["ae.torch-fp32", "gate"] == ""


def test_crossover_points_are_speedups_over_the_same_runtime_and_model_at_every_timed_batch() -> None:
    from harness.report.plots import crossover_plot, crossover_points

    def cell(cid, backend, precision, eps, b1, sweep, params):
        r = result(f"{cid}.{backend}-{precision}", backend, precision, 50.0, eps, b1_eps=b1, sweep=sweep, params=params)
        r.cell.id = f"{cid}.{r.cell.backend.token}"
        return r

    narrow, wide = {"hidden": 32}, {"hidden": 1024}
    rows = [
        cell("ae.h32", "onnxruntime", "fp32", 1000.0, 100.0, {16: 500.0}, narrow),
        cell("ae.h32", "onnxruntime", "int8", 800.0, 60.0, {16: 400.0}, narrow),
        cell("ae.h1024", "onnxruntime", "fp32", 100.0, 10.0, {16: 50.0}, wide),
        cell("ae.h1024", "onnxruntime", "int8", 400.0, 25.0, {16: 150.0}, wide),
        cell("ae.h1024", "openvino", "int8", 400.0, 25.0, {16: 150.0}, wide),  # no openvino fp32 row: no points
    ]
    points = crossover_points(rows)
    assert list(points) == ["onnxruntime-int8-dynamic"]
    assert points["onnxruntime-int8-dynamic"] == {
        "ae.h32": [(1, pytest.approx(0.6)), (16, pytest.approx(0.8)), (256, pytest.approx(0.8))],
        "ae.h1024": [(1, pytest.approx(2.5)), (16, pytest.approx(3.0)), (256, pytest.approx(4.0))],
    }
    assert crossover_plot(rows)[:4] == b"\x89PNG"
    unswept = [cell("ae.h32", "onnxruntime", p, 1000.0, 100.0, None, narrow) for p in ("fp32", "int8")]
    assert crossover_plot(unswept) is None and crossover_points(unswept)


def test_each_model_is_compared_with_its_own_torch_row_and_failures_get_no_gate() -> None:
    df = build_table([
        result("ae.w8.torch", "torch", "fp32", 40.0, 1000.0, params={"window": 8}),
        result("ae.w16.torch", "torch", "fp32", 60.0, 500.0, params={"window": 16}),
        result("ae.w8.int8", "onnxruntime", "int8", 39.0, 2000.0, params={"window": 8}),
        result("ae.w16.int8", "onnxruntime", "int8", 60.0, 2000.0, params={"window": 16}),
        result("ae.w16.ov", "openvino", "int8", 0.0, 0.0, status="failed", params={"window": 16}),
        result("lstm.int8", "onnxruntime", "int8", 30.0, 900.0, detector="lstm"),  # no lstm torch row
        result("gauss", None, "", 20.0, 0.0, detector="windowedGaussian"),
    ]).set_index("cell")
    assert df.loc["ae.w8.int8", "nab_standard_delta_pct"] == pytest.approx(-2.5)
    assert df.loc["ae.w8.int8", "speedup_vs_fp32"] == pytest.approx(2.0)
    assert df.loc["ae.w16.int8", "speedup_vs_fp32"] == pytest.approx(4.0)
    assert df.loc["ae.w8.int8", "gate"] == df.loc["ae.w16.int8", "gate"] == "PASS"
    assert df.loc["ae.w16.ov", "gate"] == "" and df.loc["ae.w16.ov", "status"] == "failed"
    assert df.loc["lstm.int8", "gate"] == "n/a: no torch fp32 row to compare with"
    assert math.isnan(df.loc["gauss", "speedup_vs_fp32"]) and df.loc["gauss", "gate"] == ""


def gate_of(reference: CellResult, int8_nab: float, int8_eps: float = 3000.0) -> str:
    df = build_table([reference, result("ae.int8", "onnxruntime", "int8", int8_nab, int8_eps)]).set_index("cell")
    return df.loc["ae.int8", "gate"]


@pytest.mark.parametrize(
    "base, nab, eps, expected",
    [(100.0, 95.01, 2000.0, "PASS"), (100.0, 95.0, 2000.0, "FAIL: loses 5.0% nab_standard (limit 5%)"),
     (100.0, 103.0, 1990.0, "FAIL: 1.99x faster (needs 2x)"),
     (100.0, 94.0, 1000.0, "FAIL: loses 6.0% nab_standard (limit 5%); 1.00x faster (needs 2x)"),
     (-20.0, -21.0, 2000.0, "FAIL: loses 5.0% nab_standard (limit 5%)"),  # a negative reference: loss by |base|
     (-20.0, -19.0, 2000.0, "PASS")],
)
def test_gate_edges(base: float, nab: float, eps: float, expected: str) -> None:
    assert gate_of(result("ae.torch-fp32", "torch", "fp32", base, 1000.0), nab, eps) == expected


def test_gate_says_why_it_has_no_verdict() -> None:
    """A reference that scores 0 (relative loss undefined, not 'no row' and not 'inf%'), a reference that failed or
    is still pending: each says so."""
    zero = result("ae.torch-fp32", "torch", "fp32", 0.0, 1000.0)
    for int8 in (0.0, -3.0):
        verdict = gate_of(zero, int8)
        assert verdict == "n/a: the torch fp32 row scores 0 nab_standard, so a relative loss is undefined", verdict
    assert gate_of(result("ae.torch-fp32", "torch", "fp32", 0.0, 0.0, status="failed"), 50.0) == "n/a: the torch fp32 row is failed"
    pending = result("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0, timed=False)  # scored, its timing not run yet
    assert pending.status == Status.PENDING
    assert gate_of(pending, 50.0) == "n/a: the torch fp32 row is pending"


def test_markdown_prints_thresholds_with_every_digit() -> None:
    df = build_table([result("ae", None, "", 50.0, 0.0, threshold=0.99999999999955)])
    md = markdown(df)
    assert "0.99999999999955" in md and "| 1 |" not in md and "50.0000" in md


def test_readme_documents_every_column() -> None:
    from harness.results.columns import LOAD_COLUMNS

    readme = (REPO / "README.md").read_text()
    for title, described in (("table.csv", COLUMNS), ("serving.csv", LOAD_COLUMNS)):
        section = readme.split(f"### Columns of `{title}`", 1)[1].split("\n#", 1)[0]
        documented = re.findall(r"^\| `([A-Za-z0-9_]+)` \|", section, flags=re.M)
        assert documented == [c.name for c in described], f"README's {title} columns differ from the descriptors"


def test_terminal_summary_fits_120_columns_with_figures_rounded_by_their_noise(tmp_path) -> None:
    """A wide backend table (long ids on targets, gates, SLA verdicts, a served cell, a failed one) summarised for
    a terminal: every line within 120 columns, though table.md's are far wider; NAB points at two decimals,
    throughput at the significant figures its timing spread supports, no 16-digit threshold."""
    import pandas as pd

    from harness.report.summary import summary

    def spread(r: CellResult, pct: float) -> CellResult:
        timing = r.tasks["timing"].result
        r.tasks["timing"] = r.tasks["timing"].model_copy(
            update={"result": timing.model_copy(update={"batchN": timing.batchN.model_copy(update={"spread_pct": pct})})})
        return r

    long = "autoencoder-wide.w-256.depth-2.{}@edge-node-with-a-long-name"
    rows = [spread(result(long.format("torch-fp32"), "torch", "fp32", 61.634567, 123456.7, threshold=0.99999999999955), 10.0),
            spread(result(long.format("onnxruntime-int8-static.prune-structured.sparsity-0.5"), "onnxruntime", "int8",
                          61.41, 371234.5), 0.5),
            spread(result(long.format("onnxruntime-int8-dynamic.prune-structured.sparsity-0.5"), "onnxruntime", "int8",
                          60.0, 290000.0), 0.5),
            result(long.format("openvino-int8"), "openvino", "int8", 0.0, 0.0, status="failed")]
    df = build_table(rows)
    df["sla"] = ["", "PASS", "NOT MEASURED: p95_ms (no load run)", ""]
    served = pd.DataFrame({"cell": [rows[1].cell.id] * 2, "path": ["http"] * 2, "run": ["rate 20", "peak"],
                           "p95_ms": [44.0312, 80.2], "peak_eps_at_slo": [None, 61234.0]})
    report = tmp_path / "report.html"
    text = summary(df, served, [("table", tmp_path / "table.md"), ("report", report)])
    lines = text.splitlines()
    assert max(len(ln) for ln in markdown(df).splitlines()) > 300
    assert all(len(ln) <= 120 for ln in lines), [ln for ln in lines if len(ln) > 120]
    header, torch_row, static, dynamic, failed = lines[:5]
    assert header.split()[:4] == ["cell", "status", "NAB", "std"]
    assert " 61.63 " in torch_row and " 120,000" in torch_row  # 10% spread: two significant figures
    assert " 371,000" in static and " 44 " in static and " 61,000" in static  # 0.5%: three; load figures: two
    assert static.split()[0] != dynamic.split()[0] and "ort" in static.split()[0]  # shortened, still apart
    assert "PASS" in static and "n/m" in dynamic and "failed" in failed
    assert "0.99999999999955" not in text and "RuntimeError: boom" in text
    assert lines[-1] == f"report: {report}" and lines[-2] == f"table: {tmp_path / 'table.md'}"
