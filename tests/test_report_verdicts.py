"""The report's verdicts and insights, from run data built in-process (no Ray, no run folders but the history's):
each criterion's PASS, FAIL and NOT MEASURED with the figures and cells it names, NAB told apart from the
synthetic corpus, and each insight topic with its figure, run and section. About 2 s in all."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.report import tables
from harness.report.runs import LoadedRun
from harness.load.summary import LatencyMs, LoadSummary
from harness.report.insights import Insight, insights
from harness.report.verdicts import Evidence, Verdict, corpus_kind, criteria
from harness.results.schema import (
    CellResult, LoadPoint, LoadResult, Manifest, PeakFigures, PolicyFigures, Status, TaskRecord, WarmupFigures,
)
from harness.scenario import Cell
from harness.sla.spec import Objectives

from test_report import result

pytestmark = pytest.mark.timeout(60)

NAB = {"root": "/data/nab", "files": 58, "rows": 365_558, "fingerprint": "nab", "only": []}
SYNTHETIC = {"root": "/cache/synthetic-7", "files": 10, "rows": 4032, "fingerprint": "syn", "only": []}


def loaded(name: str, results: list[CellResult], corpus: dict = NAB, board: pd.DataFrame | None = None,
           feedback: pd.DataFrame | None = None, scenario: str = "s", started: str = "2026-11-01T00:00:00+00:00") -> LoadedRun:
    """A run as `load_run` gives it, from results made here."""
    synthetic = {"seed": 7, "rows": 4032} if corpus is SYNTHETIC else None
    manifest = Manifest(scenario={"resolved": {"name": scenario, "corpus": {"synthetic": synthetic, "path": corpus["root"]}}},
                        corpus=corpus, cells=[r.cell.id for r in results], command=["harness", "run"], environment={},
                        started_at=started, status="complete")
    return LoadedRun(Path("/runs") / name, manifest, results, tables.build_table(results), tables.build_serving_table(results),
                     tables.build_thresholds_table(results), board, feedback)


def board(ours: dict[str, tuple[float, float, float]], htm: tuple = (70.10, 0.45, 64.0), advec: tuple = (47.06, 0.30, 40.0),
          published: bool = True) -> pd.DataFrame:
    """A leaderboard: our cells and NAB's two published detectors, each (nab_standard, f1, nab_standard_cv)."""
    rows = [{"detector": k, "source": "this run", "nab_standard": s, "f1": f, "nab_standard_cv": cv} for k, (s, f, cv) in ours.items()]
    for name, (s, f, cv) in (("numenta", htm), ("twitterADVec", advec)):
        rows.append({"detector": name, "source": "NAB raw outputs, re-scored", "nab_standard": s, "f1": f, "nab_standard_cv": cv,
                     **({"published_standard": s} if published else {})})
    return pd.DataFrame(rows)


def nab_best(ours: dict[str, tuple[float, float, float]], **kw) -> LoadedRun:
    cells = [result(k, None, "fp32", s, 0.0, detector=k) for k, (s, _, _) in ours.items()]
    return loaded("nab-best", cells, NAB, board(ours, **kw))


# --- (1) against HTM and Twitter ADVec ------------------------------------------------------------------------------
def test_the_best_cell_beating_htm_and_advec_on_score_and_f1_passes_with_cv_beside() -> None:
    run = nab_best({"ensemble": (71.84, 0.52, 66.1), "lstm": (60.0, 0.6, 50.0)})
    c = criteria([run])[0]
    assert (c.number, c.verdict, c.section) == (1, Verdict.PASS, "leaderboard")
    assert "ensemble meets or beats" in c.reason
    texts = [e.text for e in c.evidence]
    assert "ensemble: NAB standard 71.84 vs HTM 70.10, Twitter ADVec 47.06" in texts[0] and "NAB's published: HTM 70.10" in texts[0]
    assert texts[1].startswith("ensemble: F1 0.520 vs HTM 0.450, Twitter ADVec 0.300")
    assert texts[2].startswith("ensemble: cross-validated NAB standard 66.10 vs HTM 64.00, Twitter ADVec 40.00")
    assert {e.run for e in c.evidence} == {"nab-best"}


def test_a_best_cell_behind_htm_on_f1_fails_with_the_gap() -> None:
    c = criteria([nab_best({"ensemble": (71.84, 0.40, 66.1)})])[0]
    assert c.verdict == Verdict.FAIL
    assert c.reason == "ensemble trails: F1 0.400 < HTM 0.450 (by 0.0500)"


def test_without_htm_f1_it_is_not_measured() -> None:
    run = nab_best({"ensemble": (71.84, 0.52, 66.1)}, htm=(70.10, float("nan"), float("nan")))
    c = criteria([run])[0]
    assert c.verdict == Verdict.NOT_MEASURED and "F1 of HTM" in c.reason


def test_a_synthetic_run_is_not_measured_and_says_what_to_run() -> None:
    cells = [result("ae", None, "fp32", 90.0, 0.0)]
    run = loaded("quickstart", cells, SYNTHETIC, board({"ae": (90.0, 0.9, 80.0)}))  # even beside HTM rows: not NAB
    c = criteria([run])[0]
    assert c.verdict == Verdict.NOT_MEASURED
    assert c.reason.startswith("the synthetic corpus (seed 7, 4032 rows): NAB's published detectors were scored on NAB")
    assert "scenarios/nab-best.yaml --corpus data/nab" in c.reason
    assert "ae NAB standard 90.00" in c.evidence[0].text and c.evidence[0].run == "quickstart"


def test_nab_is_told_from_its_shape_or_its_published_detectors_and_a_subset_says_so() -> None:
    assert corpus_kind(loaded("a", [], NAB)).nab
    subset = {**NAB, "files": 6, "rows": 30_000, "only": ["realKnownCause"]}
    assert not corpus_kind(loaded("b", [], subset)).nab  # a subset without NAB's detectors: some other corpus
    run = loaded("c", [result("ensemble", None, "fp32", 60.0, 0.0, detector="ensemble")], subset,
                 board({"ensemble": (60.0, 0.5, 50.0)}, htm=(55.0, 0.4, 50.0), published=False))
    c = criteria([run])[0]
    assert c.verdict == Verdict.PASS and "judged on a NAB subset (realKnownCause: 6 files) only" in c.reason


# --- (2) quantized or pruned -----------------------------------------------------------------------------------------
def quantization(corpus: dict = NAB, int8: tuple[float, float] = (49.0, 2500.0)) -> LoadedRun:
    """torch fp32 1,000 events/s; onnxruntime fp32 1,100; onnxruntime int8 as given (NAB, events/s); an openvino
    int8 that loses 10%."""
    return loaded("quantization", [
        result("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0),
        result("ae.ort-fp32", "onnxruntime", "fp32", 50.0, 1100.0),
        result("ae.ort-int8", "onnxruntime", "int8", *int8),
        result("ae.ov-fp32", "openvino", "fp32", 50.0, 1000.0),
        result("ae.ov-int8", "openvino", "int8", 45.0, 4000.0),
    ], corpus)


def test_a_variant_passing_both_comparisons_on_nab_passes_and_is_named() -> None:
    c = criteria([quantization()])[1]
    assert (c.number, c.verdict, c.section) == (2, Verdict.PASS, "quantization")
    assert c.reason == "ae.ort-int8 passes against torch fp32 (2.50x) and against onnxruntime fp32 (2.27x), NAB standard -2.0%"
    assert c.evidence[0].text == ("vs torch fp32, best: ae.ort-int8: NAB standard -2.0%, 2.50x the throughput of torch fp32: PASS")
    assert c.evidence[1].text.startswith("vs onnxruntime fp32, best: ae.ort-int8: NAB standard -2.0%, 2.27x")
    assert c.evidence[2].text == "2 reduced variants: 1 pass vs torch fp32, 1 vs their runtime's fp32, 1 both"


def test_fast_against_torch_but_not_against_its_runtime_fails() -> None:
    c = criteria([quantization(int8=(49.0, 2100.0))])[1]  # 2.1x torch, 1.91x onnxruntime fp32; ov-int8 loses 10%
    assert c.verdict == Verdict.FAIL
    assert c.evidence[0].text == "vs torch fp32, best: ae.ort-int8: NAB standard -2.0%, 2.10x the throughput of torch fp32: PASS"
    assert c.evidence[1].text == ("vs onnxruntime fp32, best: ae.ort-int8: NAB standard -2.0%, 1.91x the throughput of "
                                  "onnxruntime fp32: FAIL: 1.91x faster (needs 2x)")  # within the loss ranks before ov-int8's 4x


def test_on_the_synthetic_corpus_the_loss_is_not_measured_but_the_gates_are_shown() -> None:
    c = criteria([quantization(SYNTHETIC)])[1]
    assert c.verdict == Verdict.NOT_MEASURED
    assert c.reason.startswith("the synthetic corpus (seed 7, 4032 rows): the NAB loss is only meaningful on NAB")
    assert "scenarios/quantization.yaml --corpus data/nab" in c.reason
    assert c.evidence[0].text.endswith(": PASS (on the synthetic corpus (seed 7, 4032 rows): the gate's verdict, not a NAB loss)")


def test_a_variant_without_its_runtimes_fp32_row_is_not_measured_on_nab() -> None:
    run = loaded("q", [result("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0), result("ae.ort-int8", "onnxruntime", "int8", 49.0, 2500.0)])
    c = criteria([run])[1]
    assert c.verdict == Verdict.NOT_MEASURED
    assert c.reason.endswith("ae.ort-int8: n/a: no onnxruntime fp32 row to compare with")


def test_no_reduced_precision_rows_is_not_measured() -> None:
    c = criteria([nab_best({"ensemble": (71.84, 0.52, 66.1)})])[1]
    assert c.verdict == Verdict.NOT_MEASURED and c.reason.startswith("no quantized or pruned variant") and not c.evidence


# --- (3) deployment SLAs -----------------------------------------------------------------------------------------
def served(cell_id: str, p95s: list[float], eps: float = 20_000.0, sla: dict | None = None, target: str | None = None,
           peak_eps: float | None = None) -> CellResult:
    """A cell load-tested at 20 requests/s of 1,000 events, one run per p95 given (the first may be a replica kill)."""
    def run(p95: float) -> LoadSummary:
        return LoadSummary(mode="open", offered_rps=20.0, events_per_request=1000, duration_s=10.0, requests=200, events=200_000,
                           achieved_rps=20.0, achieved_eps=eps, errors=0, dropped=0, latency_ms=LatencyMs(p50=p95 / 2, p95=p95, p99=p95))
    peak = run(90.0).model_copy(update={"achieved_eps": peak_eps}) if peak_eps else None
    load = LoadResult(deploy_s=1.0, warmup=WarmupFigures(seconds=1.0, events=10, streams=1), inprocess_eps=1e6, serve={},
                      serve_environment={}, events_per_request=1000, encoding="msgpack", streams=1,
                      points=[LoadPoint(path="http", summary=run(p)) for p in p95s],
                      peaks=[PeakFigures(path="http", slo_p95_ms=100, peak_rps=50, peak_eps=peak_eps, summary=peak, converged=True,
                                         probes=[])] if peak else [])
    cell = Cell(id=cell_id + (f"@{target}" if target else ""), detector=cell_id, type="windowedGaussian", params={}, axes={},
                sla=Objectives(**sla) if sla else None, target=target)
    return CellResult(cell=cell, kinds=["load"], tasks={"load": TaskRecord(kind="load", status=Status.OK, result=load)})


SLA = {"p95_ms": 100, "min_events_per_s": 19_000}


def test_a_cell_missing_an_objective_fails_naming_the_cell_and_the_objective() -> None:
    run = loaded("sla", [served("fast", [40.0], sla=SLA), served("slow", [40.0, 180.0], sla=SLA)], SYNTHETIC)
    c = criteria([run])[2]
    assert (c.number, c.verdict, c.section) == (3, Verdict.FAIL, "serving")
    assert c.reason == "1 of 2 cells miss an objective: slow"
    assert c.evidence[0] == Evidence("slow: FAIL: p95_ms 180 ms > 100", "sla")
    assert c.evidence[1].text == "fast: PASS (p95 40.0 ms, 20,000 events/s)"


def test_every_judged_cell_passing_passes_and_lists_the_unmeasured() -> None:
    pending = served("pending", [], sla=SLA).model_copy(update={"tasks": {}})
    failed = served("failed", [], sla=SLA).model_copy(update={"tasks": {"load": TaskRecord(kind="load", status=Status.FAILED, error="OOM")}})
    run = loaded("sla", [served("fast", [40.0], sla=SLA), served("nokill", [40.0], sla={"max_recovery_s": 10}), pending, failed], SYNTHETIC)
    c = criteria([run])[2]
    assert c.verdict == Verdict.PASS and c.reason == "every judged cell keeps its objectives (1 of 4); 3 not measured"
    assert "nokill: NOT MEASURED: max_recovery_s (no replica kill" in c.evidence[0].text
    assert c.evidence[1].text == "pending: NOT MEASURED: the cell is pending"  # not once per objective
    assert c.evidence[2].text == "failed: NOT MEASURED: the cell failed (load: OOM)"


def test_without_an_sla_section_or_a_measurable_cell_it_is_not_measured() -> None:
    c = criteria([quantization()])[2]
    assert c.verdict == Verdict.NOT_MEASURED and c.reason.startswith("no scenario had an `sla:` section")
    c = criteria([loaded("sla", [served("nokill", [40.0], sla={"max_recovery_s": 10})], SYNTHETIC)])[2]
    assert c.verdict == Verdict.NOT_MEASURED and c.reason.startswith("no cell could be judged: NOT MEASURED: max_recovery_s")


# --- insights --------------------------------------------------------------------------------------------------------
def topic(run_insights: list[Insight], name: str) -> list[Insight]:
    return [i for i in run_insights if i.topic == name]


def test_ship_names_the_fastest_build_within_the_loss_limit_per_model() -> None:
    [i] = topic(insights([quantization()]), "ship")
    assert i.text == ("Ship ae on onnxruntime int8: 2,500 events/s, 2.50x torch fp32, NAB standard -2.0% (within the 5% limit); "
                      "openvino int8 is faster (4.00x) but loses 10.0%.")
    assert (i.figure, i.run, i.section) == ("2.50x", "quantization", "quantization")
    [synthetic] = topic(insights([quantization(SYNTHETIC)]), "ship")
    assert "NAB standard -2.0% on the synthetic corpus (seed 7, 4032 rows) (within the 5% limit)" in synthetic.text
    ort, ov = result("ae.ort-int8", "onnxruntime", "int8", 49.0, 2500.0), result("ae.ov-int8", "openvino", "int8", 50.0, 2450.0)
    ort.tasks["timing"].result.batchN.spread_pct = 5.0
    [close] = topic(insights([loaded("q", [result("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0), ort, ov])]), "ship")
    assert close.text.endswith("; timing spread 5%, within which openvino int8 (2.45x) is as fast.")
    ae, lstm = topic(insights([crossover(sweep=False)]), "ship")  # no torch row: against the runtime's own fp32
    assert ae.text.startswith("Ship ae on onnxruntime int8: 2,100 events/s, 2.10x onnxruntime fp32, NAB standard +0.0%")
    assert lstm.text == ("Ship lstm on onnxruntime fp32: 1,000 events/s; no other build is faster within the 5% loss limit "
                         "(the fastest other, onnxruntime int8: 0.90x, NAB standard +0.0%).")


def crossover(sweep: bool) -> LoadedRun:
    """ae's and lstm's onnxruntime fp32 and int8 (dynamic) builds, timed at batch 1 (100 vs 80 events/s for ae) and
    256 (1,000 vs 2,100; lstm 900), and over a sweep of 16 and 64 when asked."""
    fp32, int8 = ({16: 500.0, 64: 800.0}, {16: 450.0, 64: 1000.0}) if sweep else (None, None)
    return loaded("crossover", [
        result("ae.onnxruntime-fp32", "onnxruntime", "fp32", 50.0, 1000.0, sweep=fp32),
        result("ae.onnxruntime-int8-dynamic", "onnxruntime", "int8", 50.0, 2100.0, b1_eps=80.0, sweep=int8),
        result("lstm.onnxruntime-fp32", "onnxruntime", "fp32", 50.0, 1000.0, detector="lstm", sweep=fp32),
        result("lstm.onnxruntime-int8-dynamic", "onnxruntime", "int8", 50.0, 900.0, detector="lstm", sweep=int8),
    ])


def test_int8_pays_from_the_smallest_batch_of_the_sweep_or_at_the_timed_batch() -> None:
    [i] = topic(insights([crossover(sweep=True)]), "int8")
    assert i.text == ("onnxruntime-int8-dynamic against onnxruntime fp32: ae pays from batch 64 and doubles from 256; "
                      "lstm does not pay at batch 256 (0.90x; best 1.25x at 64).")  # 1x at batch 1, 0.9x at 16: paying stays
    assert (i.figure, i.run, i.section) == ("batch 64", "crossover", "quantization")
    [unswept] = topic(insights([crossover(sweep=False)]), "int8")
    assert unswept.text == ("onnxruntime-int8-dynamic pays (>= 1x onnxruntime fp32) for 1 of 2 models at the timed batch "
                            "(no batch sweep: timing.sweep draws the crossover): ae 2.10x at batch 256 (0.80x at batch 1); lstm 0.90x at batch 256 (1.00x at batch 1).")
    assert unswept.figure == "2.10x"
    assert not topic(insights([nab_best({"ensemble": (71.84, 0.52, 66.1)})]), "int8")


def at(target: str, r: CellResult, detect_s: float, p95s: list[float] | None = None, peak_eps: float | None = None) -> CellResult:
    """`r` on a target, its scoring taking `detect_s` over its 100 rows, load-tested when `p95s` is given."""
    score = r.tasks["score"].model_copy(update={"result": r.score.model_copy(update={"detect_s": detect_s})})
    tasks, kinds = {**r.tasks, "score": score}, list(r.kinds)
    if p95s is not None:
        tasks["load"], kinds = served(r.cell.id, p95s, peak_eps=peak_eps).tasks["load"], kinds + ["load"]
    return r.model_copy(update={"cell": r.cell.model_copy(update={"id": f"{r.cell.id}@{target}", "target": target}),
                                "kinds": kinds, "tasks": tasks})


def test_edge_costs_p95_peak_and_scoring_throughput_against_cloud() -> None:
    ae = result("ae.onnxruntime-fp32", "onnxruntime", "fp32", 50.0, 1000.0)
    run = loaded("cloud-vs-edge", [at("cloud", ae, 0.01, [300.0, 12.0], 52_000.0), at("edge", ae, 0.04, [400.0, 60.0], 13_000.0)])
    [i] = topic(insights([run]), "edge")
    assert i.text == ("ae.onnxruntime-fp32 on edge: p95 60.0 ms vs 12.0 ms on cloud at rate 20 #2 over http (+48 ms); peak at the SLO "
                      "13,000 vs 52,000 events/s (0.25x); scoring 2,500 vs 10,000 events/s on its node (0.25x).")
    assert (i.figure, i.run, i.section) == ("+48 ms p95", "cloud-vs-edge", "cloud-vs-edge")
    assert not topic(insights([quantization()]), "edge")  # no targets: nothing to say


def with_policies(r: CellResult, oracle_cv: dict[str, tuple[float, float]]) -> CellResult:
    """`r` cross-validated (NAB optimised: its score -> 40) and with a policy per (oracle, cv) given."""
    policies = [PolicyFigures(policy=k, oracle_params="q 0.99", nab_standard=o, nab_standard_cv=cv, folds={}, f1=0.5, precision=0.5,
                              recall=0.5, latency_mean_s=1.0, fp_events=3, seconds=0.1) for k, (o, cv) in oracle_cv.items()]
    score = r.score.model_copy(update={"cross_validated": {"standard": 40.0}, "policies": policies})
    return r.model_copy(update={"tasks": {**r.tasks, "score": r.tasks["score"].model_copy(update={"result": score})}})


def test_thresholds_names_the_policy_that_loses_least_without_the_labels() -> None:
    cells = [with_policies(result("ae", None, "fp32", 50.0, 0.0), {"rolling_quantile": (48.0, 46.0), "spot": (52.0, 45.0)}),
             with_policies(result("wg", None, "fp32", 60.0, 0.0, detector="wg"), {"rolling_quantile": (40.0, 39.0), "spot": (45.0, 43.0)})]
    [i] = topic(insights([loaded("thresholds", cells)]), "thresholds")
    assert i.text == ("rolling_quantile loses least when not fitted to the labels: 1.50 points of NAB standard (mean over 2 cells: "
                      "44.00 oracle, 42.50 cross-validated); the others lose optimized 15.00, spot 4.50; the best cross-validated "
                      "is spot (44.00).")
    assert (i.figure, i.section) == ("1.50 points", "thresholds")


FEEDBACK = """cell,feedback,delay,nab_standard,fp_events,detected_windows,windows,precision,recall,nab_delta,fp_events_change_pct
ae,none,,50.0,10,5,6,0.3,0.8,0.0,0.0
ae,simulated (error rate 0),0,53.0,6,5,6,0.4,0.8,3.0,-40.0
ae,simulated (error rate 0),6h,51.0,8,5,6,0.35,0.8,1.0,-20.0
ae,simulated (error rate 0),1d,49.0,9,5,6,0.32,0.8,-1.0,-10.0
wg,none,,40.0,10,5,6,0.3,0.8,0.0,0.0
wg,simulated (error rate 0),0,39.0,10,5,6,0.3,0.8,-1.0,0.0
lstm,none,,40.0,10,5,6,0.3,0.8,0.0,0.0
lstm,simulated (error rate 0),0,38.0,6,5,6,0.3,0.8,-2.0,-40.0
lstm,simulated (error rate 0),1d,39.0,8,5,6,0.3,0.8,-1.0,-20.0
"""


def test_feedback_says_the_longest_delay_that_still_helps_and_where_it_never_does() -> None:
    import io

    run = loaded("feedback", [result("ae", None, "fp32", 50.0, 0.0)], feedback=pd.read_csv(io.StringIO(FEEDBACK)))
    helps, never, costs = topic(insights([run]), "feedback")
    assert helps.text == ("Reviewer feedback still helps ae 6h late: false-positive events -20%, NAB standard +1.00 "
                          "(simulated (error rate 0); delays tried: 0, 6h, 1d).")
    assert (helps.figure, helps.section) == ("6h", "feedback")
    assert never.text == ("Reviewer feedback did not help wg at any delay tried (0): false-positive events +0% to +0%, "
                          "NAB standard -1.00 to -1.00.") and never.figure == "none"
    assert costs.text == ("Reviewer feedback cuts lstm's false alarms but costs NAB standard at every delay tried (0, 1d): "
                          "false-positive events -40% to -20%, NAB standard -2.00 to -1.00.")


def test_regressions_since_the_previous_run_of_the_scenario_in_the_history(tmp_path: Path) -> None:
    from harness.history.store import index_run
    from harness.report.runs import load_run
    from test_history import past, write_run

    store = tmp_path / "history.sqlite"
    first = write_run(tmp_path / "first", eps=1000.0, started="2026-11-01T00:00:00+00:00")
    assert not insights([load_run(first)], store)  # no store yet
    index_run(first, store)
    assert not topic(insights([load_run(first)], store), "regressions")  # no earlier run
    past(store, tmp_path)  # three runs before it: the run-to-run spread that timed figures wait for
    slow = write_run(tmp_path / "slow", eps=700.0, started="2026-11-02T00:00:00+00:00")
    index_run(slow, store)
    [i] = topic(insights([load_run(slow)], store), "regressions")
    assert i.text.startswith("4 figures regressed in slow since first (2026-11-01 00:00): ae.ort-fp32 throughput_eps 1,000 -> 700 "
                             "(-30.0%); ae.ort-fp32 latency_bN_p50_ms 256 -> 366 (+42.9%)")  # the headline figure first
    assert (i.figure, i.run, i.section) == ("4 regressed", "slow", "history")
    same = write_run(tmp_path / "same", eps=700.0, started="2026-11-03T00:00:00+00:00")
    index_run(same, store)
    [ok] = topic(insights([load_run(same)], store), "regressions")
    assert ok.text.startswith("Nothing regressed in same since slow (2026-11-02 00:00):") and ok.figure == "0 regressed"
    size = store.stat().st_size  # a corrupt store: no regressions insight and no error (the history section says why)
    store.write_bytes(b"\0" * (size // 2) + store.read_bytes()[size // 2:])
    assert not topic(insights([load_run(same)], store), "regressions")
