"""Threshold policies (harness.thresholds): causal (an alert at record i never depends on a later record),
the streaming path decides exactly as the whole-stream path, and each flags what it should."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.thresholds import Fixed, RollingQuantile, Spot

POLICIES = [
    Fixed(value=3.0),
    RollingQuantile(q=0.9, window_s=3_000, min_history=5),
    RollingQuantile(q=0.95, window_s=6_000, min_history=8, smoothing=0.3),
    Spot(risk=0.01, n_init=20, init_level=0.9),
    Spot(risk=0.01, n_init=20, init_level=0.9, drift=True, depth=5),
]


@st.composite
def streams(draw):
    n = draw(st.integers(1, 120))
    steps = draw(st.lists(st.sampled_from([300.0, 300.0, 300.0, 0.0, -300.0, 3_600.0]), min_size=n, max_size=n))
    scores = draw(st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=n, max_size=n))
    return np.cumsum(steps) + 1.6e9, np.asarray(scores)


@settings(max_examples=60, deadline=None)
@given(streams(), st.data())
def test_every_policy_is_causal_and_streams_as_it_applies(stream, data) -> None:
    timestamps, scores = stream
    cut = data.draw(st.integers(0, len(scores)))
    for policy in POLICIES:
        whole = policy.apply(timestamps, scores)
        assert whole.dtype == bool and len(whole) == len(scores)
        # what follows record `cut` cannot change the alerts up to it
        assert (policy.apply(timestamps[:cut], scores[:cut]) == whole[:cut]).all(), policy
        step = policy.streaming()
        assert [step(t, s) for t, s in zip(timestamps, scores)] == whole.tolist(), policy


def test_each_policy_flags_a_spike_in_noise() -> None:
    rng = np.random.default_rng(3)
    scores = rng.gamma(2.0, 0.5, 3_000)
    scores[2_500] = 30.0
    t = 1.6e9 + 300.0 * np.arange(len(scores))
    for policy in (Fixed(value=20.0), RollingQuantile(q=0.999, min_history=288), Spot(risk=1e-4, n_init=1_000),
                   Spot(risk=1e-4, n_init=1_000, drift=True)):
        alerts = policy.apply(t, scores)
        assert alerts[2_500], policy
        assert alerts.sum() <= 30, (policy, alerts.sum())  # few false alarms on pure noise
    assert not Spot(n_init=1_000).apply(t[:900], scores[:900]).any()  # no alert before the tail is fitted


def test_cross_validation_scores_each_category_at_a_threshold_from_the_others(synthetic_root) -> None:
    """Checked against NAB's scorer itself: each fold's files scored at its fold threshold, raw scores summed and
    normalised over the corpus, give the cross-validated number."""
    from harness.corpus.layout import load_corpus
    from harness.scoring.nab import score_detector
    from harness.scoring.profiles import NAB_PROFILES
    from harness.thresholds.crossval import category, cross_validate

    corpus = load_corpus(synthetic_root)
    rng = np.random.default_rng(0)
    scores = []
    for f in corpus.files:  # a noisy detector that does see the windows
        s = rng.uniform(0.0, 0.8, f.n_rows)
        for start, end in f.windows:
            s[start + (end - start) // 3] = rng.uniform(0.7, 1.0)
        scores.append(s)
    cv = cross_validate(corpus.files, scores, label_windows=corpus.label_windows)
    oracle = score_detector(corpus.files, scores, label_windows=corpus.label_windows)
    for p in NAB_PROFILES:
        result = cv[p.name]
        assert result.oracle == oracle.profiles[p.name].score
        assert sorted(result.folds) == ["synthNoAnomaly", "synthWithAnomaly"]
        raw = 0.0
        for fold, threshold in result.folds.items():
            idx = [i for i, f in enumerate(corpus.files) if category(f) == fold]
            part = score_detector([corpus.files[i] for i in idx], [scores[i] for i in idx], thresholds={q.name: threshold for q in NAB_PROFILES})
            raw += part.profiles[p.name].raw
        null = -p.fn_weight * sum(len(f.windows) for f in corpus.files)  # every window here lies after probation
        perfect = p.tp_weight * corpus.label_windows
        assert result.cross_validated == pytest.approx(100.0 * (raw - null) / (perfect - null), abs=1e-9)


def test_a_policy_grid_is_cross_validated_by_category(synthetic_root) -> None:
    """The best candidate on all files gives the oracle (checked against NAB-scoring its alerts directly); each
    category runs with the candidate best on the other one."""
    from harness.corpus.layout import load_corpus
    from harness.thresholds.evaluate import alerts, cross_validate_policy, score_alerts

    corpus = load_corpus(synthetic_root)
    rng = np.random.default_rng(1)
    scores = [rng.uniform(0.0, 0.8, f.n_rows) for f in corpus.files]
    for f, s in zip(corpus.files, scores):
        for start, end in f.windows:
            s[start + 2] = 0.95
    grid = [Fixed(value=v) for v in (0.5, 0.79, 0.9)]
    cv = cross_validate_policy(corpus.files, scores, grid, label_windows=corpus.label_windows)
    direct = {repr(p): score_alerts(corpus.files, alerts(p, corpus.files, scores), label_windows=corpus.label_windows).profiles["standard"].score
              for p in grid}
    assert cv.oracle == pytest.approx(max(direct.values())) and direct[cv.oracle_policy] == pytest.approx(cv.oracle)
    assert cv.oracle_policy == repr(Fixed(value=0.9))  # only the planted detections reach it
    assert sorted(cv.folds) == ["synthNoAnomaly", "synthWithAnomaly"] and cv.cross_validated <= 100.0


def test_a_scoring_task_reports_the_honest_number_and_every_policy(synthetic_root) -> None:
    """The scenario's policies run in the cell's scoring task; thresholds.csv gets the optimised threshold's row
    and one per policy, each with its cross-validated number."""
    from harness.corpus.layout import load_corpus
    from harness.report.tables import build_table, build_thresholds_table
    from harness.results.schema import CellResult
    from harness.scenario import Cell
    from harness.thresholds.spec import PolicySpec
    from harness.scoring.profiles import NAB_PROFILES
    from harness.tasks import RunContext, Task, execute
    from harness.tasks.base import Needs

    corpus = load_corpus(synthetic_root)
    policies = [PolicySpec(type="fixed", grid={"value": [0.5, 0.9]}), PolicySpec(type="spot", params={"n_init": 500}, grid={"risk": [1e-3, 1e-2]})]
    ctx = RunContext(corpus, NAB_PROFILES, None, 0.15, policies=policies)
    cell = Cell(id="wg", detector="windowedGaussian", type="windowedGaussian", params={}, axes={})
    record, _ = execute(Task("score", cell, Needs()), ctx, {})
    assert record.status.value == "ok", record.error
    result = CellResult(cell=cell, kinds=["score"], tasks={"score": record})
    score = record.result
    assert set(score.cross_validated) == {p.name for p in NAB_PROFILES}
    assert set(score.cv_folds["standard"]) == {"synthNoAnomaly", "synthWithAnomaly"}
    row = build_table([result]).iloc[0]
    assert row["nab_standard_cv"] == score.cross_validated["standard"]
    assert row["cv_gap"] == pytest.approx(row["nab_standard"] - row["nab_standard_cv"])
    table = build_thresholds_table([result])
    assert list(table["policy"]) == ["optimized", "fixed", "spot"]
    assert table.loc[1, "oracle_params"] in ("Fixed(value=0.5)", "Fixed(value=0.9)")
    assert all(0 <= f <= 1 for f in table["f1"])
    scored = sum(f.n_rows - int(0.15 * f.n_rows) for f in corpus.files)  # probation: min(15%, 750) rows of 4032
    for policy, rate in zip(score.policies, table["alerts_per_1k"][1:]):  # the alert rate an operator receives
        assert policy.scored_rows == scored and 0 <= policy.alert_rows <= scored
        assert rate == pytest.approx(1000.0 * policy.alert_rows / scored)
    assert math.isnan(table.loc[0, "alerts_per_1k"])  # NAB's optimised threshold: not a policy the run applied
    for policy, shown in zip(score.policies, table["folds"][1:]):  # only the categories that ran another candidate
        differ = [f"{k}: {v}" for k, v in policy.folds.items() if v != policy.oracle_params]
        assert shown == ("; ".join(differ) or "same")
    assert score.recall_by_kind and sum(n for _, n in score.recall_by_kind.values()) == 16  # the embedded corpus names its kinds
