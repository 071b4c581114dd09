"""The run's tables, rebuilt from its typed cell results: the cell table (its columns described in
harness.results.columns) with the precision gates, the serving table and the threshold-policy table.

Renders return DataFrames or text; the run folder (harness.results.folder) decides where they go.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from harness.results.columns import BY_NAME, LOAD_COLUMNS, Column, LoadRow, columns
from harness.results.schema import CellResult, Status
from harness.scoring.profiles import REFERENCE_PROFILE

if TYPE_CHECKING:
    import pandas as pd

GATE_MAX_LOSS_PCT = 5.0  # an int8, bf16, fp16 or pruned build may lose less than 5% of the quality column...
GATE_MIN_SPEEDUP = 2.0  # ...and must reach at least 2x the speed column of its torch fp32 row (`gate`), or of its
# runtime's fp32 row (`gate_vs_backend`: what the precision itself buys, not the change of runtime)
GATE_QUALITY = BY_NAME["nab_standard"]
GATE_SPEED = BY_NAME["throughput_eps"]


# --- the table -------------------------------------------------------------------------------------------------
def build_table(results: list[CellResult]) -> "pd.DataFrame":
    """One row per cell, in the columns' order; with backends, also the comparisons against each model's torch
    fp32 row and the INT8 gate."""
    import pandas as pd

    with_backends = any(r.cell.backend is not None for r in results)
    from harness.sla import verdict as sla

    cols = columns(with_backends, any(r.cell.target for r in results), any(r.score and r.score.recall_by_kind for r in results),
                   any(r.cell.sla for r in results))
    df = pd.DataFrame([{c.name: c.value(r) for c in cols if c.value is not None} for r in results], columns=[c.name for c in cols])
    if with_backends:
        _compare_with_references(df)
    sla.add_columns(df, results)
    return df


def _reference(df: "pd.DataFrame", key: "pd.Series", rows: "pd.Series") -> "pd.Series":
    """Per row: the index of the first of `rows` (a mask) with the same `key`, or NaN."""
    first = df[rows].assign(_key=key[rows]).reset_index().drop_duplicates("_key").set_index("_key")["index"]
    return key.map(first)


def _compare_with_references(df: "pd.DataFrame") -> None:
    model = df["detector"].astype(str) + "\0" + df["params"].astype(str)  # the same model on the same target
    if "target" in df:
        model = model + "\0" + df["target"].astype(str)
    fp32 = (df["precision"] == "fp32") & (df["pruning"] == "")  # references: the unpruned fp32 rows
    torch_ref = _reference(df, model, fp32 & (df["backend"] == "torch"))  # includes rows that are not ok
    ok_ref = torch_ref.where(torch_ref.map(lambda i: not _isnan(i) and df.at[int(i), "status"] == Status.OK.value))

    def of(ref: "pd.Series", column: str) -> "pd.Series":
        return ref.map(lambda i: math.nan if _isnan(i) else df.at[int(i), column]).astype(float)

    base = of(ok_ref, GATE_QUALITY.name)
    df["nab_standard_delta_pct"] = 100.0 * (df[GATE_QUALITY.name] - base) / base.abs().where(base != 0)
    df["speedup_vs_fp32"] = df["throughput_eps"] / of(ok_ref, "throughput_eps")
    df["speedup_b1_vs_fp32"] = df["throughput_b1_eps"] / of(ok_ref, "throughput_b1_eps")
    runtime = model + "\0" + df["backend"].astype(str)
    same_runtime = _reference(df, runtime, fp32 & (df["status"] == Status.OK.value))
    df["speedup_vs_backend_fp32"] = df["throughput_eps"] / of(same_runtime, "throughput_eps")

    def row_of(ref: Any) -> "pd.Series | None":
        return None if _isnan(ref) else df.loc[int(ref)]

    reduced = (df["precision"].notna() & ~df["precision"].isin(["fp32", ""])) | (df["pruning"] != "")  # int8, bf16, fp16, pruned
    gated = reduced & (df["status"] == Status.OK.value)
    same_runtime_any = _reference(df, runtime, fp32)  # includes rows that are not ok, to say why there is no verdict
    for column, speed_refs in (("gate", torch_ref), ("gate_vs_backend", same_runtime_any)):
        df[column] = [
            gate(row, row_of(quality), row_of(speed)) if is_gated else ""
            for (_, row), is_gated, quality, speed in zip(df.iterrows(), gated, torch_ref, speed_refs)
        ]


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _change_pct(column: Column, value: float, reference: float) -> float:
    """How much better `value` is than `reference`, in percent of |reference|, by the column's direction."""
    sign = 1.0 if column.better == "higher" else -1.0
    return sign * 100.0 * (value - reference) / abs(reference)


def gate(row: "pd.Series", quality_ref: "pd.Series | None", speed_ref: "pd.Series | None") -> str:
    """PASS, FAIL with the reasons, or n/a with why no verdict is possible: a reduced-precision row must lose less
    than 5% of the quality column against its model's torch fp32 row, and reach 2x the speed column of
    `speed_ref` (that torch fp32 row, or the fp32 row of the row's own runtime)."""
    for ref, label in ((quality_ref, "torch"), (speed_ref, row["backend"] if speed_ref is None else speed_ref["backend"])):
        if ref is None:
            return f"n/a: no {label} fp32 row to compare with"
        if ref["status"] != Status.OK.value:
            return f"n/a: the {label} fp32 row is {ref['status']}"
    quality, speed = float(quality_ref[GATE_QUALITY.name]), float(speed_ref[GATE_SPEED.name])
    if quality == 0:
        return f"n/a: the torch fp32 row scores 0 {GATE_QUALITY.name}, so a relative loss is undefined"
    if _isnan(quality) or _isnan(speed) or speed <= 0:
        return f"n/a: the {speed_ref['backend']} fp32 row has no figures to compare with"
    change = _change_pct(GATE_QUALITY, float(row[GATE_QUALITY.name]), quality)
    speedup = float(row[GATE_SPEED.name]) / speed if GATE_SPEED.better == "higher" else speed / float(row[GATE_SPEED.name])
    reasons = []
    if not change > -GATE_MAX_LOSS_PCT:
        reasons.append(f"loses {-change:.1f}% {GATE_QUALITY.name} (limit {GATE_MAX_LOSS_PCT:g}%)")
    if not speedup >= GATE_MIN_SPEEDUP:
        reasons.append(f"{speedup:.2f}x faster (needs {GATE_MIN_SPEEDUP:g}x)")
    return "PASS" if not reasons else "FAIL: " + "; ".join(reasons)


def markdown(df: "pd.DataFrame") -> str:
    """The table as Markdown: 4 decimals (exact columns with every digit), empty columns of errors dropped."""
    def fmt(name: str, v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return ""
            column = BY_NAME.get(name)
            if column is not None and column.exact:
                return repr(v)
            return f"{v:.4f}" if abs(v) < 1e6 else f"{v:.4g}"
        return "" if v is None else str(v)

    shown = df.drop(columns=[c for c in ("error",) if c in df and not df[c].fillna("").astype(bool).any()])
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = [
        "| " + " | ".join(fmt(name, v).replace("|", "/") for name, v in zip(shown.columns, row)) + " |"
        for row in shown.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body]) + "\n"


# --- the serving and threshold-policy tables -----------------------------------------------------------------------------
def load_rows(results: list[CellResult]) -> list[LoadRow]:
    """The serving table's rows: every run of every cell that has a load task, then its peak run per path; a
    failed load task gives one row with its error."""
    rows = []
    for r in results:
        if "load" not in r.kinds:
            continue
        if r.load is None:
            if "load" in r.tasks:
                rows.append(LoadRow(r, "", "failed", None))
            continue
        seen: dict[tuple[str, str], int] = {}
        for i, point in enumerate(r.load.points):
            s = point.summary
            run = f"rate {s.offered_rps:g}" if s.mode == "open" else f"clients {s.concurrency}"
            seen[(point.path, run)] = seen.get((point.path, run), 0) + 1
            if seen[(point.path, run)] > 1:  # the same rate again (sla.yaml: after the run that lost its replica)
                run += f" #{seen[(point.path, run)]}"
            if i == 0 and r.load.fault is not None:
                run += " (replica killed)"
            rows.append(LoadRow(r, point.path, run, s))
        for peak in r.load.peaks:
            rows.append(LoadRow(r, peak.path, "peak", peak.summary))
    return rows


def build_serving_table(results: list[CellResult]) -> "pd.DataFrame | None":
    """One row per load run (harness.results.columns.LOAD_COLUMNS); None when no cell was load-tested."""
    import pandas as pd

    rows = load_rows(results)
    if not rows:
        return None
    cols = [c for c in LOAD_COLUMNS if not c.target or any(r.cell.target for r in results)]
    return pd.DataFrame([{c.name: c.value(row) for c in cols} for row in rows], columns=[c.name for c in cols])


def build_thresholds_table(results: list[CellResult]) -> "pd.DataFrame | None":
    """One row per cell and threshold policy (harness.results.columns.POLICY_COLUMNS): NAB's optimised threshold
    first, then the scenario's policies; None when no cell has a cross-validated score."""
    import pandas as pd

    from harness.results.columns import POLICY_COLUMNS

    rows = []
    for r in results:
        if r.score is None or not r.score.cross_validated:
            continue
        at = r.score.nab.detection[REFERENCE_PROFILE]
        optimized = {"policy": "optimized", "oracle_params": f"threshold {r.score.nab.profiles[REFERENCE_PROFILE].threshold!r}",
                     "nab_standard": r.score.nab.profiles[REFERENCE_PROFILE].score, "nab_standard_cv": r.score.cross_validated[REFERENCE_PROFILE],
                     "folds": {k: f"threshold {v!r}" for k, v in (r.score.cv_folds or {}).get(REFERENCE_PROFILE, {}).items()},
                     "f1": at.f1, "precision": at.precision, "recall": at.recall, "latency_mean_s": at.latency_mean_s,
                     "fp_events": at.fp_events}
        rows += [(r, optimized)] + [(r, p.model_dump()) for p in r.score.policies]
    if not rows:
        return None
    return pd.DataFrame([{c.name: c.value(x) for c in POLICY_COLUMNS} for x in rows], columns=[c.name for c in POLICY_COLUMNS])
