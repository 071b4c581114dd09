"""The three success criteria a report opens with, judged from the runs given (PASS / FAIL / NOT MEASURED):
(1) the best detector against HTM and Twitter ADVec on NAB, in-sample and cross-validated; (2) a quantized or
pruned variant losing < 5% NAB at >= 2x speed, against torch fp32 and against its own runtime's fp32; (3) the
scenarios' SLA verdicts.

Every verdict is read from what the runs recorded (their tables and leaderboards), never re-measured; its evidence
carries the figures, rounded to what they support, and the run they come from."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from harness.report.runs import LoadedRun

if TYPE_CHECKING:
    import pandas as pd


class Verdict(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    NOT_MEASURED = "NOT MEASURED"


@dataclass(frozen=True)
class Evidence:
    """One figure behind a verdict, and the run it comes from."""

    text: str  # e.g. "ensemble: NAB standard 71.84 vs HTM 70.10 (in-sample)"
    run: str  # LoadedRun.name


@dataclass(frozen=True)
class Criterion:
    number: int  # 1, 2, 3
    title: str  # what is asked, in a line
    verdict: Verdict
    reason: str  # one line: why this verdict (for NOT MEASURED: what would make it measurable)
    evidence: list[Evidence] = field(default_factory=list)
    section: str = ""  # the HTML anchor of the report section that shows the data


TITLES = ("Best detector vs HTM and Twitter ADVec on NAB", "Quantized or pruned: < 5% NAB loss at >= 2x speed",
          "Deployment SLAs")
HTM, ADVEC = "numenta", "twitterADVec"  # NAB's names for them (its results/ folders and scoreboard)
PUBLISHED = {HTM: "HTM", ADVEC: "Twitter ADVec"}
THIS_RUN = "this run"  # the leaderboard's `source` of the run's own cells
NAB_FILES, NAB_ROWS = 58, 365_558  # NAB v1.1 whole (harness/corpus/nab_files.json's data files, and their rows)
ON_NAB = "run scenarios/{} --corpus data/nab"  # what makes a synthetic run's criterion measurable


def criteria(runs: list[LoadedRun]) -> list[Criterion]:
    """The three criteria, always three, in order."""
    return [against_published(runs), reduced_precision(runs), slas(runs)]


# --- what a run was scored on ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusKind:
    """What a run's corpus is, for a verdict that only means something on NAB."""

    nab: bool  # NAB's own files, whole or a subset
    whole: bool  # every file of it (a subset sets `only`)
    text: str  # how the evidence names it


def corpus_kind(run: LoadedRun) -> CorpusKind:
    """NAB when the run was not on the synthetic corpus and its corpus is NAB v1.1's shape (58 files, 365,558
    rows) or its leaderboard holds NAB's published detectors (a corpus with NAB's results/ folder); a subset is
    NAB when the latter holds."""
    resolved = run.manifest.scenario.get("resolved", {}).get("corpus") or {}
    corpus = run.manifest.corpus
    only = list(corpus.get("only") or [])
    if resolved.get("synthetic"):
        s = resolved["synthetic"]
        return CorpusKind(False, True, f"the synthetic corpus (seed {s.get('seed')}, {s.get('rows')} rows)")
    shape = (corpus.get("files"), corpus.get("rows")) == (NAB_FILES, NAB_ROWS)
    with_published = len(published_rows(run.leaderboard)) == len(PUBLISHED)
    if only and with_published:
        return CorpusKind(True, False, f"a NAB subset ({', '.join(only)}: {corpus.get('files')} files)")
    if shape or (with_published and not only):
        return CorpusKind(True, True, f"NAB ({corpus.get('files')} files)")
    return CorpusKind(False, not only, f"the corpus at {corpus.get('root')} ({corpus.get('files')} files)")


def published_rows(board: "pd.DataFrame | None") -> dict[str, "pd.Series"]:
    """HTM's and Twitter ADVec's leaderboard rows, the re-scored one (it has F1) before the published one."""
    if board is None or "detector" not in board:
        return {}
    out = {}
    for name in PUBLISHED:
        rows = board[(board["detector"] == name) & (board["source"] != THIS_RUN)]
        if len(rows):
            rescored = rows["f1"].notna() if "f1" in rows else False
            out[name] = rows.assign(_f1=rescored).sort_values("_f1", ascending=False, kind="stable").iloc[0]
    return out


def best_cell(board: "pd.DataFrame | None") -> "pd.Series | None":
    """The run's own leaderboard row with the highest NAB standard score."""
    if board is None or "source" not in board:
        return None
    mine = board[(board["source"] == THIS_RUN) & board["nab_standard"].notna()]
    return None if mine.empty else mine.loc[mine["nab_standard"].idxmax()]


# --- numbers, rounded to what they support ------------------------------------------------------------------------
def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == ""


def num(v: Any) -> str:
    """A measured figure: three significant digits, thousands separated; 'n/a' when missing."""
    if missing(v):
        return "n/a"
    v = float(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{max(0, 2 - math.floor(math.log10(abs(v))))}f}" if v else "0"


def pts(v: Any) -> str:
    """A NAB score (deterministic on the same corpus): two decimals."""
    return "n/a" if missing(v) else f"{float(v):.2f}"


# --- (1) against NAB's published detectors ---------------------------------------------------------------------------
def against_published(runs: list[LoadedRun]) -> Criterion:
    """The best cell of the NAB runs (whole corpus before a subset) against HTM and Twitter ADVec, re-scored on the
    same files: PASS when it meets or beats both on NAB standard and on F1, in-sample; the cross-validated scores
    are reported beside."""
    title, section = TITLES[0], "leaderboard"
    scored = [r for r in runs if best_cell(r.leaderboard) is not None]
    nab = [r for r in scored if corpus_kind(r).nab]
    judged = [r for r in nab if len(published_rows(r.leaderboard)) == len(PUBLISHED)]
    if not judged:
        evidence = [Evidence(f"best here: {b['detector']} NAB standard {pts(b['nab_standard'])}, F1 {num(b['f1'])} on "
                             f"{corpus_kind(r).text} (not comparable with NAB's published scores)", r.name)
                    for r in scored for b in [best_cell(r.leaderboard)]]
        if nab:
            why = (f"{nab[0].name}'s corpus has neither raw outputs nor NAB's scoreboard for HTM and Twitter ADVec "
                   f"(results/numenta, results/twitterADVec): fetch it with `harness nab fetch data/nab`")
        elif scored:
            why = (f"{corpus_kind(scored[0]).text}: NAB's published detectors were scored on NAB; "
                   f"{ON_NAB.format('nab-best.yaml')}")
        else:
            why = f"no run scored a detector (no leaderboard); {ON_NAB.format('nab-best.yaml')}"
        return Criterion(1, title, Verdict.NOT_MEASURED, why, evidence, section)
    run = max(judged, key=lambda r: (corpus_kind(r).whole, float(best_cell(r.leaderboard)["nab_standard"])))
    return _judge_against(run, title, section)


def _judge_against(run: LoadedRun, title: str, section: str) -> Criterion:
    """Long because it states every comparison (two metrics x two detectors) and the cross-validated scores."""
    best, theirs, kind = best_cell(run.leaderboard), published_rows(run.leaderboard), corpus_kind(run)
    assert best is not None
    name = str(best["detector"])
    where = "" if kind.whole else f"; judged on {kind.text} only, re-scored there (NAB's scoreboard covers the whole corpus)"
    gaps, unknown = [], []
    for metric, label, fmt in (("nab_standard", "NAB standard", pts), ("f1", "F1", num)):
        for det, who in PUBLISHED.items():
            mine, other = best[metric], theirs[det][metric]
            if missing(other) or missing(mine):
                unknown.append(f"{label} of {who if missing(other) else name}")
            elif float(mine) < float(other):
                gaps.append(f"{label} {fmt(mine)} < {who} {fmt(other)} (by {fmt(float(other) - float(mine))})")

    metric_label = {"nab_standard": "NAB standard", "f1": "F1", "nab_standard_cv": "cross-validated NAB standard"}

    def line(metric: str, fmt: Any, note: str) -> str:
        vs = ", ".join(f"{who} {fmt(theirs[d][metric])}" for d, who in PUBLISHED.items())
        return f"{name}: {metric_label[metric]} {fmt(best[metric])} vs {vs} ({note})"

    published = ""
    if "published_standard" in run.leaderboard:
        published = "; NAB's published: " + ", ".join(f"{who} {pts(theirs[d].get('published_standard'))}" for d, who in PUBLISHED.items())
    evidence = [Evidence(line("nab_standard", pts, f"in-sample, re-scored on {kind.text}{published}"), run.name),
                Evidence(line("f1", num, "in-sample, at each one's standard-profile threshold"), run.name),
                Evidence(line("nab_standard_cv", pts, "thresholds chosen on the other categories; HTM's and Twitter ADVec's "
                                                       "from their re-scored raw outputs"), run.name)]
    if gaps:
        return Criterion(1, title, Verdict.FAIL, f"{name} trails: " + "; ".join(gaps) + where, evidence, section)
    if unknown:
        return Criterion(1, title, Verdict.NOT_MEASURED, f"no {', '.join(unknown)} in {run.name}'s leaderboard (NAB's raw "
                         f"outputs in the corpus's results/ give them){where}", evidence, section)
    return Criterion(1, title, Verdict.PASS, f"{name} meets or beats HTM and Twitter ADVec on NAB standard and F1 "
                     f"(in-sample){where}", evidence, section)


# --- (2) reduced precision and pruning -----------------------------------------------------------------------------
COMPARISONS = (("gate", "speedup_vs_fp32", "torch fp32"), ("gate_vs_backend", "speedup_vs_backend_fp32", "its runtime's fp32"))


def reduced_rows(run: LoadedRun) -> "pd.DataFrame":
    """The run's int8, bf16, fp16 and pruned rows, whatever their status."""
    t = run.table
    if "precision" not in t:
        return t.iloc[0:0]
    return t[(t["precision"].notna() & ~t["precision"].isin(["fp32", ""])) | (t["pruning"].fillna("") != "")]


def best_variant(rows: "list[tuple[LoadedRun, pd.Series]]", gate: str, speed: str) -> "tuple[LoadedRun, pd.Series]":
    """The row that comes closest to (or best passes) one comparison: passing, then judged, then within the loss
    limit, then the fastest."""
    def key(x: "tuple[LoadedRun, pd.Series]") -> tuple:
        row = x[1]
        loss_ok = not missing(row["nab_standard_delta_pct"]) and row["nab_standard_delta_pct"] > -5.0
        return (row[gate] == "PASS", not str(row[gate]).startswith("n/a"), loss_ok,
                -math.inf if missing(row[speed]) else float(row[speed]))
    return max(rows, key=key)


def variant_text(row: "pd.Series", speed: str, against: str) -> str:
    """`cell`: its NAB standard change and speedup against `against`."""
    delta = "n/a" if missing(row["nab_standard_delta_pct"]) else f"{row['nab_standard_delta_pct']:+.1f}%"
    times = "n/a" if missing(row[speed]) else f"{row[speed]:.2f}x"
    return f"{row['cell']}: NAB standard {delta}, {times} the throughput of {against}"


def reduced_precision(runs: list[LoadedRun]) -> Criterion:
    """Long because it tells apart the four ways of not judging (no variant, none finished, no reference, not NAB)
    before PASS or FAIL, each with what the runs did show."""
    title, section = TITLES[1], "quantization"
    per_run = [(r, reduced_rows(r)) for r in runs]
    per_run = [(r, rows) for r, rows in per_run if len(rows)]
    if not per_run:
        return Criterion(2, title, Verdict.NOT_MEASURED, "no quantized or pruned variant in these runs: run "
                         "scenarios/quantization.yaml (or pruning.yaml) --corpus data/nab", [], section)
    gated = [(r, row) for r, rows in per_run for _, row in rows.iterrows() if row["gate"] != ""]
    if not gated:
        rows = per_run[0][1]
        return Criterion(2, title, Verdict.NOT_MEASURED, f"no quantized or pruned cell finished ({rows.iloc[0]['cell']}: "
                         f"{rows.iloc[0]['error'] or rows.iloc[0]['status']})", [], section)
    nab = [(r, row) for r, row in gated if corpus_kind(r).nab]
    judged = nab or gated
    where = "" if nab else f" (on {corpus_kind(judged[0][0]).text}: the gate's verdict, not a NAB loss)"
    evidence = []
    for gate, speed, against in COMPARISONS:
        run, row = best_variant(judged, gate, speed)
        against = against.replace("its runtime's", str(row["backend"]))
        evidence.append(Evidence(f"vs {against}, best: {variant_text(row, speed, against)}: {row[gate]}{where}", run.name))
    counts = {r.name: [row for q, row in judged if q is r] for r, _ in judged}
    for name, rows in counts.items():
        passes = [sum(row[g] == "PASS" for row in rows) for g, _, _ in COMPARISONS]
        both = sum(row["gate"] == row["gate_vs_backend"] == "PASS" for row in rows)
        evidence.append(Evidence(f"{len(rows)} reduced variants: {passes[0]} pass vs torch fp32, {passes[1]} vs their "
                                 f"runtime's fp32, {both} both", name))
    if not nab:
        kinds = sorted({corpus_kind(r).text for r, _ in judged})
        return Criterion(2, title, Verdict.NOT_MEASURED, f"{'; '.join(kinds)}: the NAB loss is only meaningful on NAB; "
                         f"{ON_NAB.format('quantization.yaml')}", evidence, section)
    winners = [(r, row) for r, row in nab if row["gate"] == row["gate_vs_backend"] == "PASS"]
    if winners:
        run, row = max(winners, key=lambda x: float(x[1]["speedup_vs_fp32"]))
        others = f" ({len(winners) - 1} more pass both)" if len(winners) > 1 else ""
        return Criterion(2, title, Verdict.PASS, f"{row['cell']} passes against torch fp32 ({row['speedup_vs_fp32']:.2f}x) "
                         f"and against {row['backend']} fp32 ({row['speedup_vs_backend_fp32']:.2f}x), NAB standard "
                         f"{row['nab_standard_delta_pct']:+.1f}%{others}", evidence, section)
    if not any(str(row[g]).startswith("FAIL") for _, row in nab for g, _, _ in COMPARISONS):
        cell, why = next((row["cell"], row[g]) for _, row in nab for g, _, _ in COMPARISONS if str(row[g]).startswith("n/a"))
        return Criterion(2, title, Verdict.NOT_MEASURED, f"no variant passes both and some cannot be compared: {cell}: {why}",
                         evidence, section)
    return Criterion(2, title, Verdict.FAIL, "no variant loses < 5% NAB standard at >= 2x both against torch fp32 and "
                     "against its own runtime's fp32", evidence, section)


# --- (3) deployment SLAs -----------------------------------------------------------------------------------------
SLA_FIGURES = (("sla_p95_ms", "p95 {} ms"), ("sla_events_per_s", "{} events/s"), ("sla_error_rate", "error rate {}"),
               ("sla_recovery_s", "recovery {} s"), ("sla_nab_standard_cv", "NAB standard cv {}"),
               ("sla_quantized_loss_pct", "NAB loss {}%"))


def sla_figures(row: "pd.Series") -> str:
    """What a cell measured against its objectives, in a few words."""
    return ", ".join(text.format(num(row[col])) for col, text in SLA_FIGURES if col in row and not missing(row[col]))


def _unfinished(row: "pd.Series") -> str:
    """`NOT MEASURED: the cell is pending` for a cell that did not finish, in place of the same reason per objective."""
    return f"NOT MEASURED: the cell is {row['status']}" if row["status"] != "ok" and str(row["sla"]).startswith("NOT") else ""


def slas(runs: list[LoadedRun]) -> Criterion:
    """FAIL when a judged cell missed an objective (each named with what it missed), PASS when every judged cell
    kept them all, NOT MEASURED when no scenario had an `sla:` section or no cell could be judged. Cells that could
    not be judged are listed beside a PASS: they did not pass."""
    title, section = TITLES[2], "serving"
    judged = [(r, row) for r in runs if "sla" in r.table for _, row in r.table.iterrows() if row["sla"]]
    if not judged:
        return Criterion(3, title, Verdict.NOT_MEASURED, "no scenario had an `sla:` section (scenarios/sla.yaml has one)",
                         [], section)
    by = {v: [(r, row) for r, row in judged if str(row["sla"]).startswith(v)] for v in ("FAIL", "PASS", "NOT MEASURED")}
    evidence = [Evidence(f"{row['cell']}: {_unfinished(row) or row['sla']}" + (f" ({sla_figures(row)})" if v == "PASS" else ""), r.name)
                for v in ("FAIL", "NOT MEASURED", "PASS") for r, row in by[v]]
    if by["FAIL"]:
        cells = ", ".join(str(row["cell"]) for _, row in by["FAIL"])
        return Criterion(3, title, Verdict.FAIL, f"{len(by['FAIL'])} of {len(judged)} cells miss an objective: {cells}",
                         evidence, section)
    if not by["PASS"]:
        return Criterion(3, title, Verdict.NOT_MEASURED, f"no cell could be judged: {by['NOT MEASURED'][0][1]['sla']}",
                         evidence, section)
    unjudged = f"; {len(by['NOT MEASURED'])} not measured" if by["NOT MEASURED"] else ""
    return Criterion(3, title, Verdict.PASS, f"every judged cell keeps its objectives ({len(by['PASS'])} of {len(judged)}){unjudged}",
                     evidence, section)
