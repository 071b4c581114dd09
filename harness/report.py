"""Render a run folder's results: table.csv / table.md, the leaderboard and the precision-recall plot.

Everything is rebuilt from the per-cell `cells/<id>/result.json` files, so a resumed or partial run renders
the same way as a complete one.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

from harness.atomic import write_bytes, write_text

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
METRICS = [f"nab_{p}" for p in PROFILES] + [
    "f1",
    "alert_precision",
    "recall",
    "latency_mean_s",
    "fp_events",
    "f1_best",
    "threshold",
    "seconds",
]


def cell_dir(out: Path, cell_id: str) -> Path:
    return out / "cells" / cell_id


def read_results(out: Path, cell_ids: list[str]) -> list[dict[str, Any]]:
    """Each cell's result.json, or a `pending` placeholder for a cell that never finished."""
    rows = []
    for cid in cell_ids:
        path = cell_dir(out, cid) / "result.json"
        rows.append(json.loads(path.read_text()) if path.is_file() else {"cell": {"id": cid}, "status": "pending"})
    return rows


def table_row(result: dict[str, Any]) -> dict[str, Any]:
    cell = result["cell"]
    row: dict[str, Any] = {
        "cell": cell["id"],
        "detector": cell.get("detector", ""),
        "params": " ".join(f"{k}={v}" for k, v in cell.get("params", {}).items()),
        "status": result["status"],
    }
    report = result.get("report")
    if report:
        for p in PROFILES:
            row[f"nab_{p}"] = report["profiles"][p]["score"]
        at = report["detection"]["standard"]
        row.update(
            f1=at["f1"],
            alert_precision=at["precision"],
            recall=at["recall"],
            latency_mean_s=at["latency_mean_s"],
            fp_events=at["fp_events"],
            f1_best=report["detection"]["best_f1"]["f1"],
            threshold=report["profiles"]["standard"]["threshold"],
        )
    backend = cell.get("backend")
    if backend:
        row.update(backend=backend["backend"], precision=backend["precision"])
    timing = result.get("timing")
    if timing:
        one, big = timing["batch1"], timing["batchN"]
        row.update(
            latency_b1_p50_ms=one["p50_ms"],
            latency_b1_p95_ms=one["p95_ms"],
            batch=big["batch"],
            latency_bN_p50_ms=big["p50_ms"],
            latency_bN_p95_ms=big["p95_ms"],
            throughput_eps=big["events_per_s"],
            throughput_b1_eps=one["events_per_s"],
            throughput_spread_pct=big.get("spread_pct"),
            model_bytes=result.get("model_bytes"),
        )
    row["seconds"] = result.get("seconds", {}).get("total")
    row["error"] = result.get("error", "")
    return row


BACKEND_COLUMNS = [
    "backend", "precision", "nab_standard_delta_pct", "latency_b1_p50_ms", "latency_b1_p95_ms", "batch",
    "latency_bN_p50_ms", "latency_bN_p95_ms", "throughput_eps", "speedup_vs_fp32", "speedup_b1_vs_fp32",
    "speedup_vs_backend_fp32", "throughput_spread_pct", "model_bytes", "gate",
]
GATE_MAX_LOSS_PCT = 5.0  # an INT8 build may lose less than 5% of the NAB standard score...
GATE_MIN_SPEEDUP = 2.0  # ...and must be at least 2x faster than torch fp32 (same batch policy)


def gate(delta_pct: float, speedup: float) -> str:
    """PASS, or FAIL with the reasons: an INT8 row must lose less than 5% NAB standard and be at least 2x faster."""
    if math.isnan(delta_pct) or math.isnan(speedup):
        return "n/a: no torch fp32 row to compare with"
    reasons = []
    if not delta_pct > -GATE_MAX_LOSS_PCT:
        reasons.append(f"loses {-delta_pct:.1f}% NAB (limit {GATE_MAX_LOSS_PCT:g}%)")
    if not speedup >= GATE_MIN_SPEEDUP:
        reasons.append(f"{speedup:.2f}x faster (needs {GATE_MIN_SPEEDUP:g}x)")
    return "PASS" if not reasons else "FAIL: " + "; ".join(reasons)


def build_table(results: list[dict[str, Any]]):
    """One row per cell; with backends, also the comparisons against each detector's torch fp32 row."""
    import pandas as pd

    df = pd.DataFrame([table_row(r) for r in results])
    if "backend" not in df:
        return df.reindex(columns=["cell", "detector", "params", "status", *METRICS, "error"])
    df = df.reindex(columns=list(dict.fromkeys([*df.columns, "nab_standard", "throughput_eps", "throughput_b1_eps"])))
    def first_match(key, rows, column: str):
        """Per row: `column` of the first of `rows` (a mask) with the same `key`."""
        first = df[rows].assign(key=key[rows]).drop_duplicates("key").set_index("key")[column]
        return key.map(first).astype(float)

    ok_fp32 = (df["precision"] == "fp32") & (df["status"] == "ok")
    # the reference of a row: the first torch fp32 row of the same model (detector label and parameters)
    model = df["detector"].astype(str) + "\0" + df["params"].astype(str)
    torch_fp32 = ok_fp32 & (df["backend"] == "torch")
    base_score = first_match(model, torch_fp32, "nab_standard")
    df["nab_standard_delta_pct"] = 100.0 * (df["nab_standard"] - base_score) / base_score.abs()
    df["speedup_vs_fp32"] = df["throughput_eps"] / first_match(model, torch_fp32, "throughput_eps")
    df["speedup_b1_vs_fp32"] = df["throughput_b1_eps"] / first_match(model, torch_fp32, "throughput_b1_eps")
    # what INT8 itself buys: throughput vs the same model's first fp32 row on the same backend
    runtime = model + "\0" + df["backend"].astype(str)
    df["speedup_vs_backend_fp32"] = df["throughput_eps"] / first_match(runtime, ok_fp32, "throughput_eps")
    df["gate"] = [
        gate(r.nab_standard_delta_pct, r.speedup_vs_fp32)
        if r.precision == "int8" and r.status == "ok" else ""
        for r in df.itertuples(index=False)
    ]
    columns = ["cell", "detector", "params", "status", *METRICS[:3], *BACKEND_COLUMNS[:3], *METRICS[3:], *BACKEND_COLUMNS[3:], "error"]
    return df.reindex(columns=columns)


def markdown(df) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4f}" if abs(v) < 1e6 else f"{v:.4g}"
        return "" if v is None else str(v)

    shown = df.drop(columns=[c for c in ("error",) if c in df and not df[c].fillna("").astype(bool).any()])
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(fmt(v).replace("|", "/") for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_tables(out: Path, cell_ids: list[str]):
    """table.csv and table.md; returns the table (a DataFrame)."""
    df = build_table(read_results(out, cell_ids))
    write_text(out / "table.csv", df.to_csv(index=False))
    write_text(out / "table.md", markdown(df))
    return df


def write_leaderboard(out: Path, df, published_path: Path | None) -> str:
    """The run's scored cells ranked together with NAB's published scoreboard (when the corpus has one)."""
    import pandas as pd

    ok = df[df["status"] == "ok"]
    rows = [
        {"detector": r.cell, "source": "this run", **{f"nab_{p}": getattr(r, f"nab_{p}") for p in PROFILES}}
        for r in ok.itertuples(index=False)
    ]
    if published_path is not None and published_path.is_file():
        for name, scores in json.loads(published_path.read_text()).items():
            rows.append({"detector": name, "source": "NAB published", **{f"nab_{p}": scores.get(p) for p in PROFILES}})
    board = pd.DataFrame(rows, columns=["detector", "source", *[f"nab_{p}" for p in PROFILES]])
    board = board.sort_values("nab_standard", ascending=False, kind="stable").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    write_text(out / "leaderboard.csv", board.to_csv(index=False))
    md = markdown(board)
    write_text(out / "leaderboard.md", md)
    return md


def write_pr_plot(out: Path, cell_ids: list[str]) -> Path | None:
    """All cells' precision-recall curves in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    curves = [(cid, cell_dir(out, cid) / "pr_curve.csv") for cid in cell_ids]
    curves = [(cid, p) for cid, p in curves if p.is_file()]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    for cid, path in curves:
        c = pd.read_csv(path)
        ax.step(c["recall"], c["precision"], where="post", label=cid)
    ax.set(xlabel="recall (windows detected)", ylabel="precision (over alert events)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title("Precision-recall over all thresholds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    target = out / "pr_curves.png"
    write_bytes(target, buf.getvalue())
    return target
