"""Actionable insights generated from the runs' data: each a sentence a stakeholder can act on, with the number
behind it and the run it comes from.

Topics, in this order, each only where the runs say something about it: which build to ship per model (`ship`),
where INT8 starts to pay (`int8`), what the edge costs (`edge`), which threshold policy loses least without the
labels (`thresholds`), what feedback delay still helps (`feedback`), what regressed since the previous run
(`regressions`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report.runs import LoadedRun
from harness.report.tables import GATE_MAX_LOSS_PCT
from harness.report.verdicts import corpus_kind, missing, num, pts

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Insight:
    topic: str  # "ship", "int8", "edge", "thresholds", "feedback", "regressions"
    text: str  # the advice, one or two sentences, with its figure in it
    figure: str  # the number behind it, e.g. "2.31x"
    run: str  # LoadedRun.name
    section: str  # the HTML anchor of the section that shows the data


def insights(runs: list[LoadedRun], history: Path | None = None) -> list[Insight]:
    """Every insight the runs support, in the topics' order; none for a topic the runs say nothing about.
    `history`: the history store (harness.history.store) to find what regressed since each run's previous run."""
    out: list[Insight] = []
    for topic in (ship, int8, edge, thresholds, feedback):
        out += [i for run in runs for i in topic(run)]
    out += [i for run in runs for i in regressions(run, history)]
    return out


def _model(row: "pd.Series", table: "pd.DataFrame") -> str:
    """How an insight names a model: its detector label, its parameters when the label has several, its target."""
    same = table[table["detector"] == row["detector"]]
    params = f" ({row['params']})" if same["params"].nunique() > 1 else ""
    target = f" on {row['target']}" if "target" in table and not missing(row["target"]) else ""
    return f"{row['detector']}{params}{target}"


def _build(row: "pd.Series") -> str:
    pruning = f", {row['pruning']} pruned" if row.get("pruning") else ""
    return f"{row['backend']} {row['precision']}{pruning}"


def _on(run: LoadedRun) -> str:
    """Where a NAB figure was measured, when that is not NAB (the figure means less there)."""
    kind = corpus_kind(run)
    return "" if kind.nab else f" on {kind.text}"


# --- ship ----------------------------------------------------------------------------------------------------------
def _reference(rows: "pd.DataFrame") -> "pd.Series | None":
    """A model's reference build: its unpruned torch fp32 row, else its first unpruned fp32 row (a scenario without
    torch, like sla.yaml: the loss and speedup are then against that runtime's fp32)."""
    fp32 = rows[(rows["precision"] == "fp32") & (rows["pruning"].fillna("") == "") & rows["nab_standard"].notna()]
    torch = fp32[fp32["backend"] == "torch"]
    return torch.iloc[0] if len(torch) else fp32.iloc[0] if len(fp32) else None


def ship(run: LoadedRun) -> list[Insight]:
    """Per model with more than one build: the fastest finished build that keeps within the gate's loss (5% of the
    reference's NAB standard: torch fp32, else the model's fp32 build), with its throughput, speedup and loss."""
    t = run.table
    if "backend" not in t:
        return []
    ok = t[(t["status"] == "ok") & t["throughput_eps"].notna()]
    key = ok["detector"].astype(str) + "\0" + ok["params"].astype(str) + ("\0" + ok["target"].astype(str) if "target" in ok else "")
    out = []
    for _, rows in ok.groupby(key, sort=False):
        ref = _reference(rows)
        if len(rows) < 2 or ref is None or not ref["nab_standard"] or not ref["throughput_eps"]:
            continue
        loss = -100.0 * (rows["nab_standard"] - ref["nab_standard"]) / abs(ref["nab_standard"])
        speed = rows["throughput_eps"] / ref["throughput_eps"]
        kept = rows[loss < GATE_MAX_LOSS_PCT]
        best, fastest = kept.loc[kept["throughput_eps"].idxmax()], rows.loc[rows["throughput_eps"].idxmax()]
        against = f"{ref['backend']} fp32"
        why = (f"{num(best['throughput_eps'])} events/s, {speed[best.name]:.2f}x {against}, NAB standard "
               f"{-loss[best.name]:+.1f}%{_on(run)} (within the {GATE_MAX_LOSS_PCT:g}% limit)")
        if best.name == ref.name:
            other = rows.drop(index=ref.name)
            runner = other.loc[other["throughput_eps"].idxmax()]
            why = (f"{num(best['throughput_eps'])} events/s; no other build is faster within the {GATE_MAX_LOSS_PCT:g}% loss "
                   f"limit (the fastest other, {_build(runner)}: {speed[runner.name]:.2f}x, NAB standard {-loss[runner.name]:+.1f}%{_on(run)})")
        elif fastest.name != best.name:
            why += f"; {_build(fastest)} is faster ({speed[fastest.name]:.2f}x) but loses {loss[fastest.name]:.1f}%"
        spread = best.get("throughput_spread_pct")
        if not missing(spread) and spread > 0:
            close = kept[(kept.index != best.name) & (kept["throughput_eps"] >= best["throughput_eps"] * (1 - spread / 100))]
            why += f"; timing spread {spread:.0f}%" + (", within which " + ", ".join(
                f"{_build(r)} ({speed[i]:.2f}x)" for i, r in close.iterrows()) + " is as fast" if len(close) else "")
        out.append(Insight("ship", f"Ship {_model(best, t)} on {_build(best)}: {why}.", f"{speed[best.name]:.2f}x",
                           run.name, "quantization"))
    return out


# --- int8 ----------------------------------------------------------------------------------------------------------
def _from(points: list[tuple[int, float]], at_least: float) -> int | None:
    """The smallest batch from which the speedup stays at `at_least` or more at every larger batch measured."""
    first = None
    for batch, speedup in points:
        first = (first or batch) if speedup >= at_least else None
    return first


def int8(run: LoadedRun) -> list[Insight]:
    """Per INT8 build: with a batch sweep, the smallest batch from which each model's speedup over the same runtime's
    fp32 stays at 1x and at 2x; without one, the speedup at batch 1 and at the timed batch."""
    from harness.report.plots import crossover_points

    swept = any(r.timing is not None and r.timing.sweep for r in run.results)
    out = []
    for build, models in crossover_points(run.results).items():
        if "int8" not in build:
            continue
        runtime = build.split("-")[0]
        parts, firsts = [], []
        for model, points in models.items():
            if swept:
                pays, doubles = _from(points, 1.0), _from(points, 2.0)
                top_b, top = max(points, key=lambda p: p[1])
                if pays is None:
                    parts.append(f"{model} does not pay at batch {points[-1][0]} ({points[-1][1]:.2f}x; best {top:.2f}x at {top_b})")
                else:
                    firsts.append(pays)
                    parts.append(f"{model} pays from batch {pays}" + (f" and doubles from {doubles}" if doubles else
                                 f", never doubles (best {top:.2f}x at {top_b})"))
            else:
                (b1, s1), (bn, sn) = points[0], points[-1]
                firsts.append(sn)
                parts.append(f"{model} {sn:.2f}x at batch {bn} ({s1:.2f}x at batch {b1})")
        if swept:
            figure = f"batch {min(firsts)}" if firsts else "never"
            text = f"{build} against {runtime} fp32: " + "; ".join(parts) + "."
        else:
            figure = f"{max(firsts):.2f}x"
            paying = sum(s >= 1.0 for s in firsts)
            text = (f"{build} pays (>= 1x {runtime} fp32) for {paying} of {len(firsts)} models at the timed batch "
                    f"(no batch sweep: timing.sweep draws the crossover): " + "; ".join(parts) + ".")
        out.append(Insight("int8", text, figure, run.name, "quantization"))
    return out


# --- edge ----------------------------------------------------------------------------------------------------------
def _targets(run: LoadedRun) -> tuple[str, list[str]] | None:
    """The target others are compared with (`cloud` when there is one, else the first) and the others."""
    t = run.table
    if "target" not in t:
        return None
    names = list(dict.fromkeys(str(x) for x in t["target"] if not missing(x)))
    if len(names) < 2:
        return None
    base = "cloud" if "cloud" in names else names[0]
    return base, [n for n in names if n != base]


def _clean_p95(serving: "pd.DataFrame | None", cell: str) -> dict[str, float]:
    """A cell's fixed-rate runs without a replica kill: `path run` label -> p95, in the order they ran."""
    if serving is None:
        return {}
    rows = serving[(serving["cell"] == cell) & (serving["run"] != "peak") & ~serving["run"].str.contains("killed")
                   & serving["p95_ms"].notna()]
    return {f"{r['run']} over {r['path']}": float(r["p95_ms"]) for _, r in rows.iterrows()}


def _peak(serving: "pd.DataFrame | None", cell: str) -> float | None:
    if serving is None:
        return None
    peaks = serving.loc[serving["cell"] == cell, "peak_eps_at_slo"].dropna()
    return float(peaks.max()) if len(peaks) else None


def edge(run: LoadedRun) -> list[Insight]:
    """Per cell run on several targets: what each target costs against the base one (cloud) in p95 at the same
    rate, in the served peak at the SLO, and in the scoring task's events/s on its node."""
    targets = _targets(run)
    if targets is None:
        return []
    base, others = targets
    t, out = run.table, []
    section = "cloud-vs-edge"
    for _, row in t[t["target"] == base].iterrows():
        plain = str(row["cell"]).removesuffix(f"@{base}")
        for other in others:
            mine, theirs = f"{plain}@{other}", str(row["cell"])
            match = t[t["cell"] == mine]
            if match.empty:
                continue
            parts, figure = [], ""
            a, b = _clean_p95(run.serving, theirs), _clean_p95(run.serving, mine)
            both = [k for k in b if k in a]
            if both:  # the last run both targets had at the same rate and path
                at, pa95, pb95 = both[-1], a[both[-1]], b[both[-1]]
                figure = f"{pb95 - pa95:+.0f} ms p95"
                parts.append(f"p95 {num(pb95)} ms vs {num(pa95)} ms on {base} at {at} ({pb95 - pa95:+.0f} ms)")
            pa, pb = _peak(run.serving, theirs), _peak(run.serving, mine)
            if pa and pb is not None:
                parts.append(f"peak at the SLO {num(pb)} vs {num(pa)} events/s ({pb / pa:.2f}x)")
                figure = figure or f"{pb / pa:.2f}x peak"
            sa, sb = row.get("scoring_eps"), match.iloc[0].get("scoring_eps")
            if not missing(sa) and not missing(sb):
                parts.append(f"scoring {num(sb)} vs {num(sa)} events/s on its node ({sb / sa:.2f}x)")
                figure = figure or f"{sb / sa:.2f}x scoring"
            if parts:
                out.append(Insight("edge", f"{plain} on {other}: " + "; ".join(parts) + ".", figure, run.name, section))
    return out


# --- thresholds ----------------------------------------------------------------------------------------------------
def thresholds(run: LoadedRun) -> list[Insight]:
    """The threshold policy whose NAB standard drops least when its parameters are chosen on the other categories
    (oracle minus cross-validated, the mean over the run's cells), and the best cross-validated one if another."""
    p = run.policies
    if p is None or p.empty:
        return []
    by = p.groupby("policy", sort=False).agg(gap=("cv_gap", "mean"), cv=("nab_standard_cv", "mean"),
                                             oracle=("nab_standard", "mean"), cells=("cell", "nunique"))
    least = str(by["gap"].idxmin())
    row = by.loc[least]
    name = "NAB's optimised threshold" if least == "optimized" else least
    n = int(row["cells"])
    cells = f"mean over {n} cells" if n > 1 else str(p.loc[p["policy"] == least, "cell"].iloc[0])
    figures = f"{row['gap']:.2f} points of NAB standard ({cells}: {pts(row['oracle'])} oracle, {pts(row['cv'])} cross-validated)"
    if len(by) == 1:
        text = (f"{name} loses {figures} when chosen on the other categories; it is the only policy measured "
                f"(scoring.policies adds fixed, rolling_quantile and spot)")
    else:
        text = f"{name} loses least when not fitted to the labels: {figures}; the others lose " + ", ".join(
            f"{k} {r['gap']:.2f}" for k, r in by.iterrows() if k != least)
        top = str(by["cv"].idxmax())
        if top != least:
            text += f"; the best cross-validated is {top} ({pts(by.loc[top, 'cv'])})"
    on = f" (scored{_on(run)})" if _on(run) else ""
    return [Insight("thresholds", text + on + ".", f"{row['gap']:.2f} points", run.name, "thresholds")]


# --- feedback ------------------------------------------------------------------------------------------------------
def feedback(run: LoadedRun) -> list[Insight]:
    """Per cell of `harness feedback evaluate`'s table: the longest simulated reviewer delay at which feedback still
    cut false-positive events without lowering NAB standard (harness.feedback.status.useful_delays)."""
    from harness.feedback.review import delay_text, parse_delay
    from harness.feedback.status import useful_delays

    f = run.feedback
    if f is None or f.empty:
        return []
    rows = [{k: "" if missing(v) else str(v) for k, v in r.items()} for r in f.to_dict("records")]
    useful = useful_delays(rows)
    out = []
    for cell in dict.fromkeys(r["cell"] for r in rows):
        tried = [r for r in rows if r["cell"] == cell and r["feedback"].startswith("simulated") and r["delay"]]
        if not tried:
            continue
        if cell in useful:
            at = next(r for r in tried if parse_delay(r["delay"]) == useful[cell])
            text = (f"Reviewer feedback still helps {cell} {delay_text(useful[cell])} late: false-positive events "
                    f"{float(at['fp_events_change_pct']):+.0f}%, NAB standard {float(at['nab_delta']):+.2f} "
                    f"({at['feedback']}; delays tried: {', '.join(r['delay'] for r in tried)})")
            figure = delay_text(useful[cell])
        else:
            fp, nab = ([float(r[k]) for r in tried] for k in ("fp_events_change_pct", "nab_delta"))
            ranges = f"false-positive events {min(fp):+.0f}% to {max(fp):+.0f}%, NAB standard {min(nab):+.2f} to {max(nab):+.2f}"
            delays = ", ".join(r["delay"] for r in tried)
            text = (f"Reviewer feedback cuts {cell}'s false alarms but costs NAB standard at every delay tried ({delays}): {ranges}"
                    if max(fp) < 0 else f"Reviewer feedback did not help {cell} at any delay tried ({delays}): {ranges}")
            figure = "none"
        out.append(Insight("feedback", text + ".", figure, run.name, "feedback"))
    return out


# --- regressions ---------------------------------------------------------------------------------------------------
HEADLINE = ("nab_standard", "nab_standard_cv", "f1", "sla_met", "throughput_eps", "peak_eps_at_slo", "p95_ms", "achieved_eps")


def regressions(run: LoadedRun, history: Path | None) -> list[Insight]:
    """What `harness compare` finds regressed since the previous run of the same scenario, judged with the history's
    run-to-run noise, the headline figures (HEADLINE) first; nothing without a store or a previous run."""
    from harness.errors import InputError
    from harness.history.compare import Verdict, compare
    from harness.history.store import previous_run, readable

    if history is None or not Path(history).is_file() or not readable(Path(history)):
        return []  # a corrupt store: the history section says so, and `harness history rebuild` mends it
    prev = previous_run(Path(history), run.scenario, run.manifest.started_at, run.root)
    if prev is None:
        return []
    try:
        c = compare(prev["path"], run.root, history=Path(history))
    except InputError:
        return []  # the previous run has no cells (interrupted before any finished): nothing to judge against
    since = f"since {Path(prev['path']).name} ({str(prev['started_at'])[:16].replace('T', ' ')})"
    if c.regressions:
        headline = {m: i for i, m in enumerate(HEADLINE)}
        worst = sorted(c.regressions, key=lambda v: (headline.get(v.metric.partition("[")[0], len(headline)), -abs(v.delta_pct or 0.0)))
        def change(v: "Verdict") -> str:
            noise = f", noise {v.noise_pct:.0f}%" if v.noise_pct else ""
            return "" if v.delta_pct is None else f" ({v.delta_pct:+.1f}%{noise})"

        shown = "; ".join(f"{v.cell} {v.metric} {num(v.a)} -> {num(v.b)}{change(v)}" for v in worst[:3])
        more = f"; {len(worst) - 3} more" if len(worst) > 3 else ""
        text = f"{len(worst)} figure{'s' * (len(worst) != 1)} regressed in {run.name} {since}: {shown}{more}."
        return [Insight("regressions", text, f"{len(worst)} regressed", run.name, "history")]
    counts: dict[str, int] = {}
    for v in c.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    changed = f"; {len(c.failures)} deterministic figures changed" if c.failures else ""
    return [Insight("regressions", f"Nothing regressed in {run.name} {since}: {len(c.verdicts)} figures compared ({summary}){changed}.",
                    "0 regressed", run.name, "history")]
