"""Deployment SLAs: the scenario's `sla:` section, each objective measured from the figures a cell recorded, the
verdict column, `--fail-on-sla`, and the history seeing a verdict turn from PASS to FAIL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from harness.load.summary import LatencyMs, LoadSummary
from harness.report.tables import build_table
from harness.results.schema import (
    CellResult, FaultFigures, LoadPoint, LoadResult, PeakFigures, Status, TaskRecord, WarmupFigures,
)
from harness.scenario import Cell, Scenario, expand
from harness.sla.spec import Objectives
from harness.sla.verdict import failed, judge
from tests.conftest import harness, needs_netns, one_error_line
from tests.test_report import result as scored

BASE = {"name": "t", "detectors": [{"type": "windowedGaussian"}]}
TARGETS = {"cloud": {"labels": {"tier": "cloud"}}, "edge": {"labels": {"tier": "edge"}}}


def test_objectives_apply_to_every_cell_or_per_target() -> None:
    flat = expand(Scenario.model_validate({**BASE, "sla": {"p95_ms": 100, "min_nab_standard_cv": 20}}))
    assert [c.sla.given() for c in flat] == [{"p95_ms": 100.0, "min_nab_standard_cv": 20.0}]
    both = expand(Scenario.model_validate({**BASE, "targets": TARGETS, "sla": {"edge": {"p95_ms": 150}, "cloud": {"p95_ms": 50}}}))
    assert {c.id: c.sla.given() for c in both} == {"windowedGaussian@cloud": {"p95_ms": 50.0}, "windowedGaussian@edge": {"p95_ms": 150.0}}
    edge_only = expand(Scenario.model_validate({**BASE, "targets": TARGETS, "sla": {"edge": {"p95_ms": 150}}}))
    assert {c.id: c.sla for c in edge_only}["windowedGaussian@cloud"] is None
    assert [c.id for c in edge_only] == ["windowedGaussian@cloud", "windowedGaussian@edge"]  # ids unchanged by an SLA
    assert Scenario.model_validate({**BASE, "sla": {"p95_ms": 100}}).model_dump(mode="json")["sla"] == {"p95_ms": 100.0}


@pytest.mark.parametrize("sla, expected", [
    ({"p95_ms": -1}, "sla: p95_ms: Input should be greater than 0"),
    ({"p95_msx": 3}, "sla: p95_msx: unknown objective"),
    ({"edge": {"p95_ms": 1}}, "sla: edge: not a target of this scenario (targets: none"),
    ({"p95_ms": 100, "edge": {"p95_ms": 1}}, "sla: expected either objectives or target names"),
    ([1, 2], "sla: expected objectives"),
])
def test_a_bad_sla_section_is_one_line_naming_the_key(sla, expected, tmp_path: Path, cli_env) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({**BASE, "sla": sla}))
    line = one_error_line(harness(cli_env, "validate", path))
    assert str(path) in line and expected in line, line


def _summary(p95: float, eps: float, errors: int = 0) -> LoadSummary:
    return LoadSummary(mode="open", offered_rps=20.0, events_per_request=1000, duration_s=10.0, requests=200 - errors,
                       events=1000 * (200 - errors), achieved_rps=20.0, achieved_eps=eps, errors=errors, dropped=0,
                       latency_ms=LatencyMs(p50=p95 / 2, p95=p95, p99=p95 * 1.2))


def _served(runs: list[LoadSummary], peak: LoadSummary | None = None, fault: FaultFigures | None = None,
            sla: dict | None = None) -> CellResult:
    cell = Cell(id="ae", detector="ae", type="autoencoder", params={}, axes={}, sla=Objectives(**(sla or {})))
    load = LoadResult(deploy_s=1.0, warmup=WarmupFigures(seconds=1.0, events=10, streams=1), inprocess_eps=1e6, serve={},
                      serve_environment={}, events_per_request=1000, encoding="msgpack", streams=1,
                      points=[LoadPoint(path="http", summary=s) for s in runs],
                      peaks=[PeakFigures(path="http", slo_p95_ms=100, peak_rps=50, peak_eps=peak.achieved_eps, summary=peak,
                                         converged=True, probes=[])] if peak else [], fault=fault)
    return CellResult(cell=cell, kinds=["load"], tasks={"load": TaskRecord(kind="load", status=Status.OK, result=load)})


KILL = FaultFigures(replica="shard0", at_s=2.0, killed=True, errors=3, recovery_s=4.0)
ALL_LOAD = {"p95_ms": 100, "min_events_per_s": 19000, "max_error_rate": 0.01, "max_recovery_s": 10}


def test_the_replica_kill_run_is_judged_by_recovery_not_by_p95_or_errors() -> None:
    r = _served([_summary(900.0, 18000, errors=3), _summary(40.0, 20000)], peak=_summary(95.0, 48000), fault=KILL, sla=ALL_LOAD)
    j = judge(r, r.cell.sla)
    assert j.verdict == "PASS", j
    assert j.figures == {"sla_p95_ms": 40.0, "sla_events_per_s": 48000.0, "sla_error_rate": 0.0, "sla_recovery_s": 4.0}
    assert j.held == dict.fromkeys(["p95_ms", "min_events_per_s", "max_error_rate", "max_recovery_s"], True)


def test_every_missed_objective_is_named_with_measured_vs_target() -> None:
    slow = _served([_summary(40.0, 20000), _summary(180.0, 20000, errors=10)], peak=None,
                   fault=KILL.model_copy(update={"recovery_s": 30.0}), sla=ALL_LOAD)
    j = judge(slow, slow.cell.sla)
    assert j.verdict == "FAIL: p95_ms 180 ms > 100; min_events_per_s 0 events/s < 19,000; max_error_rate 0.05 > 0.01; max_recovery_s 30 s > 10", j.verdict
    assert j.held["max_recovery_s"] is False and j.figures["sla_events_per_s"] == 0.0  # no run kept both objectives


def test_a_recovery_still_going_when_the_run_ended_cannot_pass() -> None:
    unfinished = _served([_summary(40.0, 20000), _summary(40.0, 20000)], fault=KILL.model_copy(update={"recovered": False}),
                         sla={"max_recovery_s": 30})
    j = judge(unfinished, unfinished.cell.sla)
    assert j.verdict == "FAIL: max_recovery_s >= 4 s (still failing when the run ended; target 30)", j.verdict
    assert j.held == {"max_recovery_s": False} and j.figures == {"sla_recovery_s": 4.0}


def test_what_was_not_measured_says_why() -> None:
    no_kill = _served([_summary(40.0, 20000)], sla={"p95_ms": 100, "max_recovery_s": 10, "min_nab_standard_cv": 0})
    j = judge(no_kill, no_kill.cell.sla)
    assert j.verdict == ("NOT MEASURED: max_recovery_s (no replica kill (set load.kill_replica_at_s)); "
                         "min_nab_standard_cv (the scoring task did not finish)"), j.verdict
    assert j.held == {"p95_ms": True, "max_recovery_s": None, "min_nab_standard_cv": None}
    only_kill = _served([_summary(40.0, 20000)], fault=KILL, sla={"p95_ms": 100})
    assert judge(only_kill, only_kill.cell.sla).verdict.startswith("NOT MEASURED: p95_ms (no fixed-rate load run besides")


def test_quantized_loss_applies_to_builds_not_to_their_reference() -> None:
    rows = [scored("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0), scored("ae.onnxruntime-int8", "onnxruntime", "int8", 46.0, 3000.0),
            scored("ae.onnxruntime-fp32", "onnxruntime", "fp32", 50.0, 1500.0)]
    for r in rows:
        r.cell.sla = Objectives(max_quantized_loss_pct=5.0)
    df = build_table(rows)
    assert list(df["sla"]) == ["", "FAIL: max_quantized_loss_pct 8 % > 5", "PASS"]
    assert math.isnan(df["sla_met"][0]) and list(df["sla_met"][1:]) == [0.0, 1.0]
    assert df["sla_quantized_loss_pct"][2] == 0.0 and not math.copysign(1, df["sla_quantized_loss_pct"][2]) < 0  # 0, not -0
    assert failed(df) == ["ae.onnxruntime-int8"]
    # without a torch fp32 row, a build is judged against its own runtime's fp32 row, which is then the reference
    ort = build_table(rows[1:])
    assert list(ort["sla"]) == ["FAIL: max_quantized_loss_pct 8 % > 5", ""] and ort["sla_quantized_loss_pct"][0] == pytest.approx(8.0)


@needs_netns
def test_fail_on_sla_exits_1_and_compare_sees_the_verdict_regress(tmp_path: Path, cli_env) -> None:
    """Two real runs of one baseline: one SLA it keeps, one it misses; `--fail-on-sla` and the history judge them."""
    env = {k: v for k, v in cli_env.items() if k != "PYTHONPATH"}  # this one needs Ray
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    runs = {}
    for name, floor in (("keeps", -1000), ("misses", 1000)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({"name": "sla-test", "corpus": {"synthetic": {"seed": 7, "rows": 1200}},
                                    "detectors": [{"type": "windowedGaussian", "params": {"min_samples": 10}}],
                                    "sla": {"min_nab_standard_cv": floor}}))
        runs[name] = tmp_path / name
        done = harness(env, "run", path, "--out", runs[name], "--fail-on-sla", timeout=240)
        assert done.returncode == (0 if name == "keeps" else 1), done.stderr[-2000:]
    assert "1 cell(s) failed their SLA: windowedGaussian" in done.stderr
    row = pd.read_csv(runs["misses"] / "table.csv").iloc[0]
    assert row["sla"].startswith("FAIL: min_nab_standard_cv ") and row["sla"].endswith(" points < 1,000"), row["sla"]
    assert row["sla_met"] == 0.0 and row["sla_nab_standard_cv"] == row["nab_standard_cv"]
    compared = harness(env, "compare", runs["keeps"], runs["misses"], "--json", timeout=60)
    assert compared.returncode == 1, compared.stdout + compared.stderr
    verdicts = {v["metric"]: v["verdict"] for v in json.loads(compared.stdout)["verdicts"]}
    assert verdicts["sla_met"] == "regressed" and verdicts["sla_nab_standard_cv"] == "same"
