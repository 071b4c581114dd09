"""The run's reports, rebuilt from its typed cell results: the table (its columns described in
harness.results.columns), the INT8 gate, the leaderboard and the precision-recall plot.

Renders return text or bytes; the run folder (harness.results.folder) decides where they go.
"""

from __future__ import annotations

import io
import json
import math
from typing import TYPE_CHECKING, Any

from harness.results.columns import BY_NAME, LOAD_COLUMNS, Column, LoadRow, columns
from harness.results.schema import CellResult, Status
from harness.scoring.profiles import NAB_PROFILES, REFERENCE_PROFILE

if TYPE_CHECKING:
    import pandas as pd

    from harness.plan import Plan

PROFILES = tuple(p.name for p in NAB_PROFILES)  # the leaderboard's nab_<profile> columns
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


# --- the serving table and its plot -----------------------------------------------------------------------------
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


def latency_plot(results: list[CellResult]) -> bytes | None:
    """p50 / p95 / p99 against achieved events/s, one line per variant and path, over every measured run (the
    rates asked for and the peak search's probes); None when nothing was load-tested."""
    lines = {}
    for r in results:
        if r.load is None:
            continue
        for path in sorted({p.path for p in r.load.points} | {p.path for p in r.load.peaks}):
            runs = [p.summary for p in r.load.points if p.path == path]
            runs += [s for peak in r.load.peaks if peak.path == path for s in peak.runs]
            runs = sorted((s for s in runs if s.requests), key=lambda s: s.achieved_eps)
            if runs:
                lines[f"{r.cell.id} ({path})"] = runs
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for k, (label, runs) in enumerate(lines.items()):
        colour = f"C{k % 10}"
        x = [s.achieved_eps for s in runs]
        for pct, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
            ax.plot(x, [getattr(s.latency_ms, pct) for s in runs], style, color=colour, marker="o", ms=3,
                    label=f"{label} {pct}")
    ax.set(xlabel="achieved events/s", ylabel="latency (ms, from intended send time)", yscale="log")
    ax.set_title("Latency against throughput (p50 dotted, p95 solid, p99 dashed)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small", loc="best")
    return _png(fig)


# --- the leaderboard ---------------------------------------------------------------------------------------------
BOARD_METRICS = ["nab_standard", "nab_standard_cv", "nab_reward_low_FP_rate", "nab_reward_low_FN_rate", "f1", "alert_precision",
                 "recall", "range_f1", "latency_mean_s", "fp_events"]


def leaderboard(table: "pd.DataFrame", p: "Plan") -> tuple[str, str]:
    """The run's ok cells ranked with NAB's published detectors (CSV, Markdown).

    Every detector whose raw outputs sit in the corpus's `results/<name>/` is re-scored here, on the same files
    (a subset too), with the same profiles, probation and threshold policy as the run's cells, so its F1,
    precision, recall, latency and FP events stand beside ours. NAB's published scoreboard
    (`results/final_results.json`) covers the whole corpus only: it is merged (column `published_standard`, and
    rows for detectors without raw outputs) only when the run used the whole corpus."""
    import pandas as pd

    ok = table[table["status"] == Status.OK.value]
    rows = [{"detector": r["cell"], "source": "this run", **{m: r[m] for m in BOARD_METRICS}} for _, r in ok.iterrows()]
    rescored, notes = _rescore_published(p)
    rows += rescored
    published = _published_scoreboard(p)
    if published is not None and not p.corpus.only:
        have = {r["detector"] for r in rows if r["source"] != "this run"}
        for r in rows:
            if r["source"] != "this run" and r["detector"] in published:
                r["published_standard"] = published[r["detector"]].get(REFERENCE_PROFILE)
        for name, scores in published.items():
            if name not in have:
                rows.append({"detector": name, "source": "NAB published", **{f"nab_{k}": scores.get(k) for k in PROFILES},
                             "published_standard": scores.get(REFERENCE_PROFILE)})
        notes.append("NAB published: NAB's scoreboard (results/final_results.json), which covers the whole corpus; "
                     "`published_standard` is its standard score beside the re-scored one.")
    elif published is not None:
        notes.append(f"NAB's published scoreboard covers the whole corpus only, so it is not merged for this subset "
                     f"({', '.join(p.corpus.only)}); the published detectors' raw outputs are re-scored on the subset instead.")
    columns = ["detector", "source", *BOARD_METRICS] + (["published_standard"] if any("published_standard" in r for r in rows) else [])
    board = pd.DataFrame(rows, columns=columns)
    board = board.sort_values("nab_standard", ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    md = markdown(board) + ("".join(f"\n- {n}" for n in notes) + "\n" if notes else "")
    return board.to_csv(index=False), md


def _published_scoreboard(p: "Plan") -> dict[str, dict[str, float]] | None:
    path = p.corpus_root / "results" / "final_results.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _rescore_published(p: "Plan") -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for every detector with raw outputs in the corpus's results/ folder, scored like the run's cells."""
    from harness.errors import InputError
    from harness.scoring.nab import CorpusIndex
    from harness.scoring.profiles import load_thresholds
    from harness.scoring.results_layout import read_results_dir
    from harness.thresholds.crossval import score_like_a_cell

    results = p.corpus_root / "results"
    if not results.is_dir():
        return [], []
    rows, notes = [], []
    index = None
    for folder in sorted(d for d in results.iterdir() if d.is_dir()):
        try:
            name, scores = read_results_dir(folder, p.corpus)
        except InputError as exc:
            notes.append(f"{folder.name}: not re-scored ({exc})")
            continue
        thresholds = None
        if p.thresholds is not None:
            try:
                thresholds = load_thresholds(p.scenario.scoring.thresholds, name, p.profiles)
            except InputError:
                notes.append(f"{name}: the scenario's thresholds file has no entry for it; its thresholds are optimised")
        index = index or CorpusIndex.build(p.corpus.files, p.scenario.scoring.probation_percent, p.corpus.label_windows)
        rep, cv = score_like_a_cell(p.corpus.files, scores, name, thresholds, p.profiles, p.scenario.scoring.probation_percent,
                                    p.corpus.label_windows, index)
        at = rep.detection[REFERENCE_PROFILE]
        rows.append({
            "detector": name,
            "source": "NAB raw outputs, re-scored",
            **{f"nab_{k}": rep.profiles[k].score for k in PROFILES if k in rep.profiles},
            "nab_standard_cv": cv[REFERENCE_PROFILE].cross_validated if cv and REFERENCE_PROFILE in cv else None,
            "f1": at.f1, "alert_precision": at.precision, "recall": at.recall, "range_f1": at.range_f1,
            "latency_mean_s": at.latency_mean_s, "fp_events": at.fp_events,
        })
    if rows:
        policy = "optimised per profile" if p.thresholds is None else "from the scenario's thresholds file"
        notes.append(f"NAB raw outputs, re-scored: each detector in {results} scored here, thresholds {policy}, "
                     "on the same files and probation as this run.")
    return rows, notes


# --- the plots --------------------------------------------------------------------------------------------------
def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def crossover_points(results: list[CellResult]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{backend entry: {model: [(batch, speedup)]}}: every reduced-precision or pruned row's throughput against
    its model's unpruned fp32 row on the same runtime, at batch 1, the large batch and each `timing.sweep` size."""
    def key(r: CellResult) -> str:
        return r.cell.id.replace("." + r.cell.build, "")  # the model (and its target, if any)

    def speeds(r: CellResult) -> dict[int, float]:
        t = r.timing
        return {f.batch: f.events_per_s for f in (t.batch1, t.batchN, *t.sweep.values())} if t else {}

    timed = [r for r in results if r.cell.backend is not None and r.status == Status.OK and r.timing is not None]
    fp32 = {(key(r), r.cell.backend.backend): speeds(r) for r in timed if r.cell.backend.precision == "fp32" and r.cell.pruning is None}
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in timed:
        spec = r.cell.backend
        ref = fp32.get((key(r), spec.backend))
        if ref is None or (spec.precision == "fp32" and r.cell.pruning is None):
            continue
        mine = speeds(r)
        points = [(b, mine[b] / ref[b]) for b in sorted(mine) if b in ref and ref[b] > 0]
        if points:
            out.setdefault(r.cell.build, {})[key(r)] = points
    return out


def crossover_plot(results: list[CellResult]) -> bytes | None:
    """What a precision (or pruning) buys on its own runtime, against batch size, one line per model: where INT8
    starts to pay. Drawn when some timing swept batch sizes (`timing.sweep`); None otherwise."""
    if not any(r.timing is not None and r.timing.sweep for r in results):
        return None
    panels = crossover_points(results)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False, sharey=True)
    for ax, (token, lines) in zip(axes.flat, panels.items()):
        for label, points in lines.items():
            ax.plot(*zip(*points), marker="o", ms=3, label=label)
        ax.axhline(2.0, color="k", lw=0.8, ls="--")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="batch (windows per call)", title=token)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="x-small", loc="best")
    for ax in axes[:, 0]:
        ax.set_ylabel("throughput vs the same runtime's fp32")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("What the precision itself buys (dashed: 2x)")
    return _png(fig)


def pr_plot(curves: dict[str, dict[str, Any] | None]) -> bytes | None:
    """Every given cell's precision-recall curve in one PNG; None when there is none."""
    curves = {cid: c for cid, c in curves.items() if c is not None}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for cid, c in curves.items():
        ax.step(c["recall"], c["precision"], where="post", label=cid)
    ax.set(xlabel="recall (windows detected)", ylabel="precision (over alert events)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title("Precision-recall over all thresholds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return _png(fig)
