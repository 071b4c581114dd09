"""The HTML report's sections (harness.report.html), each built from the runs that hold its data, or None when
none does: the NAB leaderboard, quantization, serving, cloud vs edge, threshold policies, feedback, the history's
trend, and provenance. Anchors are fixed: the verdicts and insights link to them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report import plots
from harness.report.blocks import PR_MAX_CELLS, PR_MAX_POINTS, Section, Table, Text, figure, fmt, per_run, present, table
from harness.report.runs import LoadedRun

if TYPE_CHECKING:
    import pandas as pd

LEADERBOARD = ["rank", "detector", "source", "nab_standard", "nab_standard_cv", "f1", "alert_precision", "recall", "range_f1",
               "latency_mean_s", "fp_events", "published_standard"]
QUANTIZATION = ["cell", "target", "backend", "precision", "pruning", "status", "f1", "f1_vs_fp32", "nab_standard",
                "nab_standard_delta_pct", "latency_b1_p50_ms", "latency_b1_p95_ms", "throughput_eps", "speedup_vs_fp32",
                "speedup_vs_backend_fp32", "model_bytes", "gate", "gate_vs_backend"]
SERVING = ["cell", "target", "path", "run", "offered_eps", "achieved_eps", "p50_ms", "p95_ms", "p99_ms", "errors", "shed",
           "dropped", "valid", "peak_eps_at_slo", "served_vs_inprocess", "network", "error"]
SLA = ["cell", "target", "sla", "sla_p95_ms", "sla_events_per_s", "sla_error_rate", "sla_recovery_s", "sla_nab_standard_cv",
       "sla_quantized_loss_pct"]
SIDE_BY_SIDE = ["status", "nab_standard", "f1", "latency_b1_p95_ms", "throughput_eps"]
POLICIES = ["cell", "policy", "oracle_params", "nab_standard", "nab_standard_cv", "cv_gap", "f1", "alert_precision", "recall",
            "fp_events"]
HEADLINES = ("nab_standard", "nab_standard_cv", "f1", "throughput_eps", "latency_b1_p95_ms")
HEADLINE_PATTERNS = ("peak_eps_at_slo[% peak]", "p95_ms[% peak]")
REGRESSION_THRESHOLD = 0.10  # as `harness compare`'s default: a measured figure must move more than this and its noise


def all_sections(runs: list[LoadedRun], history: Path | None) -> list[Section | None]:
    return [leaderboard(runs), quantization(runs), serving(runs), cloud_vs_edge(runs), thresholds(runs), feedback(runs),
            history_trend(runs, history), provenance(runs)]


# --- NAB ----------------------------------------------------------------------------------------------------------
def leaderboard(runs: list[LoadedRun]) -> Section | None:
    """The leaderboards that rank the runs' detectors beside NAB's published ones (all of them when none does),
    with the PR curves of each run's best cells."""
    boards = [r for r in runs if r.leaderboard is not None and not r.leaderboard.empty]
    compared = [r for r in boards if (r.leaderboard["source"].astype(str) != "this run").any()]

    def make(run: LoadedRun) -> list[Any]:
        board = table(run.leaderboard, LEADERBOARD, caption=f"{run.name}: ranked by NAB standard score; the run's own "
                      "detectors are highlighted")
        if board is not None:
            board.row_css = ["ours" if s == "this run" else "" for s in run.leaderboard["source"].astype(str)]
        return present(board, figure(_pr(run), f"precision-recall curves of {run.name}",
                                     f"Precision-recall over all thresholds: the best {PR_MAX_CELLS} ok cells at most"))

    return Section("leaderboard", "NAB leaderboard", "F1, precision, recall, range F1, detection latency, false-positive "
                   "events and the cross-validated score (each category at the threshold chosen on the others) of the "
                   "runs' detectors, beside NAB's published detectors re-scored on the same files.", per_run(compared or boards, make))


def _pr(run: LoadedRun) -> bytes | None:
    ok = run.table[run.table["status"] == "ok"]
    if ok.empty:
        return None
    best = ok.sort_values("nab_standard", ascending=False, kind="stable").head(PR_MAX_CELLS)
    return plots.pr_plot({cid: run.curve(cid) for cid in best["cell"]}, "svg", PR_MAX_POINTS)


def thresholds(runs: list[LoadedRun]) -> Section | None:
    """Threshold policies against NAB's label-fitted threshold: the runs that compared more than that one, else
    the runs on NAB itself (where the label-fitted threshold's cross-validated loss is the figure to quote)."""
    scored = [r for r in runs if r.policies is not None]
    compared = [r for r in scored if r.policies["policy"].nunique() > 1]
    chosen = compared or [r for r in scored if not (r.manifest.scenario.get("resolved", {}).get("corpus") or {}).get("synthetic")]

    def make(run: LoadedRun) -> list[Any]:
        df = run.policies
        return present(table(df, POLICIES, caption="nab_standard: the best candidate chosen on the labels it is judged on "
                             "(an oracle); nab_standard_cv: each category at the candidate best on the others"))

    return Section("thresholds", "Threshold policies", "What each threshold policy scores when it is not fitted to the "
                   "labels it is judged on (cross-validated by category), beside the label-fitted oracle.", per_run(chosen, make))


def feedback(runs: list[LoadedRun]) -> Section | None:
    def make(run: LoadedRun) -> list[Any]:
        return present(table(run.feedback, list(run.feedback.columns), caption="`harness feedback evaluate`: NAB score and "
                             "false alarms with reviewers' verdicts arriving after each delay, against no feedback")) \
            if run.feedback is not None else []

    return Section("feedback", "Feedback by reviewer delay", "How much reviewers' verdicts help the detector, by how late "
                   "they arrive.", per_run(runs, make))


# --- quantization, serving, placement ---------------------------------------------------------------------------
def _model(df: "pd.DataFrame") -> "pd.Series":
    """The model a row is a variant of: detector, parameters and target (the table's reference key)."""
    key = df["detector"].astype(str) + " " + df["params"].fillna("").astype(str)
    if "target" in df:
        key = key + " @" + df["target"].fillna("").astype(str)
    return key.str.replace(r"\s+", " ", regex=True).str.strip()


def _reduced(df: "pd.DataFrame") -> "pd.Series":
    precision = df["precision"].fillna("").astype(str) if "precision" in df else None
    if precision is None:
        return df["cell"].map(lambda _: False)
    return ~precision.isin(["fp32", ""]) | (df["pruning"].fillna("").astype(str) != "")


def quantization(runs: list[LoadedRun]) -> Section | None:
    """Pre- vs post-quantization (and pruning) F1, NAB score and latency, and accuracy against speed."""
    def make(run: LoadedRun) -> list[Any]:
        df = run.table
        if "precision" not in df or not _reduced(df).any():
            return []
        model = _model(df)
        ref = (df["backend"] == "torch") & (df["precision"] == "fp32") & (df["pruning"].fillna("") == "") & (df["status"] == "ok")
        f1_ref = model.map(dict(zip(model[ref][::-1], df["f1"][ref][::-1])))  # the first such row per model
        df = df.assign(f1_vs_fp32=df["f1"] - f1_ref)
        ok = df[df["status"] == "ok"]
        points = [{"cell": r["cell"], "model": m, "throughput_eps": r["throughput_eps"], "nab_standard": r["nab_standard"],
                   "precision": f"{r['precision']}{' pruned' if r['pruning'] else ''}"} for (_, r), m in zip(ok.iterrows(), model[ok.index])]
        return present(
            table(df, QUANTIZATION, caption="gate: < 5% NAB loss against the model's torch fp32 row at >= 2x its "
                  "throughput; gate_vs_backend: the same against the fp32 row of the variant's own runtime"),
            figure(plots.accuracy_speed_plot(points), f"accuracy against speed, {run.name}"),
            figure(plots.crossover_plot(run.results, "svg"), f"speed-up against batch size, {run.name}",
                   "Where the reduced precision starts to pay: its throughput over its runtime's fp32, by batch size"))

    return Section("quantization", "Quantization and pruning", "Each reduced-precision or pruned variant against its "
                   "model's fp32 build: F1 and NAB score before and after, inference latency (batch 1) and throughput "
                   "(large batch); the Pareto front marks the variants no other beats on both accuracy and speed.",
                   per_run(runs, make))


def serving(runs: list[LoadedRun]) -> Section | None:
    def make(run: LoadedRun) -> list[Any]:
        if run.serving is None:
            return []
        return present(
            table(run.serving, SERVING, caption="Each load run, then the peak found at the p95 objective; latency from "
                  "each request's intended send time (no coordinated omission)"),
            figure(plots.latency_plot(run.results, "svg"), f"latency against throughput, {run.name}"),
            table(run.table, SLA, caption="The scenario's SLA, per cell") if "sla" in run.table else None)

    return Section("serving", "Serving: latency against throughput", "Each variant served on Ray Serve under load: "
                   "latency percentiles against the events per second achieved, and the SLA verdicts.", per_run(runs, make))


def cloud_vs_edge(runs: list[LoadedRun]) -> Section | None:
    """The same variants on each target, side by side: a row per variant, the targets' figures next to each other."""
    def make(run: LoadedRun) -> list[Any]:
        df = run.table
        if "target" not in df or df["target"].dropna().nunique() < 2:
            return []
        targets = list(dict.fromkeys(df["target"].dropna()))
        variant = [c[: -len(f"@{t}")] if isinstance(t, str) and c.endswith(f"@{t}") else c for c, t in zip(df["cell"], df["target"])]
        peaks = _peaks(run)
        rows: dict[str, dict[str, Any]] = {}
        for v, (_, r) in zip(variant, df.iterrows()):
            row = rows.setdefault(v, {"variant": v})
            for m in SIDE_BY_SIDE:
                row[f"{m} @{r['target']}"] = r.get(m)
            for m, value in peaks.get(r["cell"], {}).items():
                row[f"{m} @{r['target']}"] = value
        import pandas as pd

        wide = pd.DataFrame(list(rows.values()))
        columns = ["variant"] + [f"{m} @{t}" for m in (*SIDE_BY_SIDE, "peak_eps_at_slo", "p95_ms at peak") for t in targets]
        return present(table(wide, columns, caption=f"targets: {', '.join(targets)}"))

    return Section("cloud-vs-edge", "Cloud against edge", "The same variants on each target (node groups chosen by "
                   "labels), side by side: accuracy, batch-1 latency, throughput, and the served peak.", per_run(runs, make))


def _peaks(run: LoadedRun) -> dict[str, dict[str, Any]]:
    if run.serving is None:
        return {}
    peak = run.serving[run.serving["run"] == "peak"]
    return {r["cell"]: {"peak_eps_at_slo": r.get("peak_eps_at_slo"), "p95_ms at peak": r.get("p95_ms")} for _, r in peak.iterrows()}


# --- history and provenance ---------------------------------------------------------------------------------------
def history_trend(runs: list[LoadedRun], path: Path | None) -> Section | None:
    """Each run's headline figures over its scenario's runs in the history, regressions marked as `harness
    compare` judges them (noise-aware, against the run before)."""
    from harness.errors import InputError
    from harness.history import store

    if path is None or not path.is_file():
        return None
    done: set[str] = set()

    def make(run: LoadedRun) -> list[Any]:
        if run.scenario in done:
            return []
        done.add(run.scenario)
        try:
            rows = [r for r in store.series(path, run.scenario, HEADLINES, HEADLINE_PATTERNS) if r["cell"] in set(run.manifest.cells)]
        except InputError as exc:  # a corrupt store: the report goes on without the trend, and says why
            return [Text(f"The history could not be read: {exc}")]
        if len({r["run_id"] for r in rows}) < 2:
            return []
        return _trendpresent(rows, store.run_id(run.root))

    return Section("history", "History", "The headline figures of each scenario over its runs in the history store; a "
                   "red cross marks a figure worse than in the run before by more than its noise and 10%.", per_run(runs, make))


def _trendpresent(rows: list[dict[str, Any]], this_run: str) -> list[Any]:
    """A plot per headline figure over the runs, and a table of this run's changes against the run before."""
    from datetime import datetime

    from harness.history.compare import judge

    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["metric"], r["cell"]), []).append(r)
    series: dict[str, dict[str, list[tuple[Any, float, bool]]]] = {}
    changes = []
    for (metric, cell), points in by.items():
        line = series.setdefault(metric, {}).setdefault(cell, [])
        for prev, cur in zip([None, *points], points):
            v = None if prev is None else judge(_measure(prev), _measure(cur), REGRESSION_THRESHOLD,
                                                 prev["corpus_fingerprint"] == cur["corpus_fingerprint"],
                                                 same_code=prev["git_commit"] == cur["git_commit"])
            line.append((datetime.fromisoformat(cur["started_at"]), cur["value"], bool(v and v.verdict == "regressed")))
            if v is not None and cur["run_id"] == this_run:
                changes.append({"cell": cell, "metric": metric, "before": prev["value"], "now": cur["value"],
                                "change_pct": v.delta_pct, "noise_pct": v.noise_pct, "verdict": v.verdict})
    import pandas as pd

    blocks: list[Any] = [figure(plots.history_plot(s, m), f"{m} over the history's runs") for m, s in series.items()]
    blocks.append(table(pd.DataFrame(changes), ["cell", "metric", "before", "now", "change_pct", "noise_pct", "verdict"],
                        caption="This run against the run before it") if changes else None)
    return present(*blocks)


def _measure(row: dict[str, Any]) -> Any:
    from harness.history.rows import Measurement

    return Measurement(row["cell"], None, row["metric"], row["value"], row["better"], bool(row["deterministic"]),
                       row["noise_pct"], row["unit"] or "")


def provenance(runs: list[LoadedRun]) -> Section:
    """What each run ran: code, scenario, corpus, hardware, library versions (from its manifest)."""
    def make(run: LoadedRun) -> list[Any]:
        m = run.manifest
        env, code, ray = m.environment, m.environment.get("code", {}), m.ray or {}
        hardware = sorted({h for h in run.table.get("hardware", []) if isinstance(h, str) and h})
        facts = [
            ("code", f"git {code.get('git_commit') or '(not a git checkout)'}, tree sha256 {code.get('tree_sha256', '')}"),
            ("command", " ".join(m.command)),
            ("scenario", f"{run.scenario} ({m.scenario.get('file', '')})"),
            ("run", f"{m.status.value}; started {m.started_at}, finished {m.finished_at or '-'}"
                    + (f"; resumed {len(m.resumes)} time(s)" if m.resumes else "")),
            ("corpus", f"{m.corpus.get('root', '')}: {m.corpus.get('files')} files, {m.corpus.get('rows')} rows"
                       + (f", only {', '.join(m.corpus['only'])}" if m.corpus.get("only") else "")),
            ("corpus hash", str(m.corpus.get("fingerprint", ""))),
            ("hardware", f"{env.get('cpu_model', '?')}, {env.get('cpu_count', '?')} CPUs; {env.get('platform', '')}"),
            ("Ray", f"{ray.get('address', '-')}, Ray {ray.get('ray_version', '?')}, {ray.get('nodes', '?')} node(s), "
                    f"{json.dumps({k: v for k, v in (ray.get('cluster_resources') or {}).items() if k in ('CPU', 'GPU')})}"),
            ("cells ran on", "; ".join(hardware) or "-"),
            ("Python", str(env.get("python", ""))),
            ("libraries", ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())),
        ]
        return [Table(["what", "value"], [[fmt(k), fmt(v)] for k, v in facts]),
                Text(str(m.scenario.get("given", "")), pre=True)]

    return Section("provenance", "Provenance", "Enough to reproduce each run: the code, the scenario as given, the "
                   "corpus and its hash, the hardware and the library versions.", per_run(runs, make))
