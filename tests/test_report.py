"""The comparison table of a backend run: deltas and speedups against the same model's torch fp32 row, and the
INT8 gate (less than 5% NAB standard lost, at least 2x the throughput), from result records as cells write them."""

from __future__ import annotations

import math

import pytest

from harness.report import build_table, gate


def result(cell_id: str, backend: str | None, precision: str, nab: float, eps: float, b1_eps: float = 100.0,
           status: str = "ok", params: dict | None = None, detector: str = "ae") -> dict:
    cell = {"id": cell_id, "detector": detector, "params": params or {"window": 8},
            "backend": {"backend": backend, "precision": precision, "threads": 1} if backend else None}
    if status != "ok":
        return {"cell": cell, "status": status, "error": "RuntimeError: boom"}
    at = {"f1": 0.5, "precision": 0.25, "recall": 0.75, "latency_mean_s": 60.0, "fp_events": 3}
    latency = lambda e, b: {"batch": b, "p50_ms": 1000.0 * b / e, "p95_ms": 1100.0 * b / e, "events_per_s": e}
    record = {
        "cell": cell,
        "status": "ok",
        "report": {
            "profiles": {p: {"score": nab, "threshold": 0.9} for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")},
            "detection": {"standard": at, "best_f1": {"f1": 0.6}},
        },
    }
    if backend:  # only a backend cell is timed
        record.update(timing={"batch1": latency(b1_eps, 1), "batchN": latency(eps, 256)}, model_bytes=1234)
    return record


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
    assert df.loc["ae.ov-int8", "gate"] == "FAIL: loses 10.0% NAB (limit 5%)"
    assert df.loc["ae.ort-int8-static", "gate"] == "FAIL: 1.50x faster (needs 2x)"
    assert df.loc["ae.ov-fp32", "gate"] == "" and df.loc["ae.torch-fp32", "gate"] == ""
    assert df.loc["ae.ov-fp32", "precision"] == "fp32" and df.loc["ae.ov-fp32", "alert_precision"] == 0.25
    assert df.loc["ae.ort-int8", "latency_bN_p50_ms"] == pytest.approx(1000.0 * 256 / 2500.0)
    assert df.loc["ae.ort-int8", "model_bytes"] == 1234
    assert df.loc["ae.ov-int8", "speedup_vs_backend_fp32"] == pytest.approx(2.5)  # vs ae.ov-fp32
    assert df.loc["ae.ov-fp32", "speedup_vs_backend_fp32"] == 1
    assert math.isnan(df.loc["ae.ort-int8", "speedup_vs_backend_fp32"])  # no onnxruntime fp32 row


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
    assert df.loc["lstm.int8", "gate"].startswith("n/a")
    assert math.isnan(df.loc["gauss", "speedup_vs_fp32"]) and df.loc["gauss", "gate"] == ""


@pytest.mark.parametrize(
    "delta, speedup, expected",
    [(-4.99, 2.0, "PASS"), (-5.0, 2.0, "FAIL: loses 5.0% NAB (limit 5%)"), (3.0, 1.99, "FAIL: 1.99x faster (needs 2x)"),
     (-6.0, 1.0, "FAIL: loses 6.0% NAB (limit 5%); 1.00x faster (needs 2x)")],
)
def test_gate_edges(delta: float, speedup: float, expected: str) -> None:
    assert gate(delta, speedup) == expected
