"""Task kinds in plain Python (no Ray): a backend cell's scoring task, then its timing task fed with what the
scoring handed over, as the runner chains them; failures become records; probation comes from the scenario."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from harness.timing import TimingSpec
from harness.corpus.layout import load_corpus
from harness.corpus.synthetic import write_corpus
from harness.results.folder import HANDOFF, SCORES
from harness.results.schema import Status
from harness.scenario import Cell
from harness.scoring.nab import probation_rows
from harness.scoring.profiles import load_profiles
from harness.tasks.handoff import ModelHandoff
from harness.tasks import RunContext, execute, kinds_of, plan_tasks

TIMING = TimingSpec(batch=32, warmup=1, min_iterations=5, min_duration_s=0.0, rounds=1, exclusive=True)
AE = Cell(
    id="ae.onnxruntime-int8-dynamic", detector="ae", type="autoencoder", axes={},
    params={"window": 8, "hidden": 8, "bottleneck": 2, "epochs": 1},
    backend={"backend": "onnxruntime", "precision": "int8", "quantization": "dynamic"},
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_corpus(write_corpus(tmp_path_factory.mktemp("c") / "corpus", 5, 500))


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))


def context(corpus, probation: float = 0.15) -> RunContext:
    return RunContext(corpus, load_profiles(None), None, probation, TIMING)


def test_cells_become_scoring_then_timing_tasks(corpus) -> None:
    plain = AE.model_copy(update={"id": "ae", "backend": None})
    tasks = plan_tasks([plain, AE], TIMING, len(corpus.files))
    assert [(t.id, t.kind, t.dependencies) for t in tasks] == [
        ("ae/score", "score", ()),
        (f"{AE.id}/score", "score", ()),
        (f"{AE.id}/timing", "timing", (f"{AE.id}/score",)),
    ]
    assert tasks[0].units == len(corpus.files) and tasks[2].needs.exclusive
    assert kinds_of(plain) == ["score"] and kinds_of(AE) == ["score", "timing"]
    assert not plan_tasks([AE], TIMING.model_copy(update={"exclusive": False}), 1)[1].needs.exclusive


def test_scoring_then_timing_from_the_handoff(corpus) -> None:
    score_task, timing_task = plan_tasks([AE], TIMING, len(corpus.files))
    units: list[int] = []
    record, artefacts = execute(score_task, context(corpus), {}, units.append)
    assert record.status == Status.OK, record.traceback
    assert sum(units) == len(corpus.files)  # progress moves file by file
    score = record.result
    assert score.kind == "score" and score.files == len(corpus.files) and score.rows == corpus.n_rows
    assert score.backend_info["models_prepared"] == len(corpus.files)
    assert score.model_bytes == score.backend_info["size_bytes"] > 0
    assert set(score.nab.profiles) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert [len(s) for s in artefacts[SCORES]] == [f.n_rows for f in corpus.files]
    handoff = pickle.loads(pickle.dumps(artefacts))[HANDOFF]  # it travels to another Ray task
    assert ModelHandoff.from_bytes(handoff).windows.shape == (32, 8)

    record, out = execute(timing_task, context(corpus), {"score": artefacts})
    assert record.status == Status.OK, record.traceback
    timing = record.result
    assert timing.kind == "timing" and out == {}
    assert timing.cache == "hit" and timing.exclusive is True  # prepared by the scoring task already
    assert timing.batch1.batch == 1 and timing.batchN.batch == 32 and timing.batchN.iterations >= 5
    for lat in (timing.batch1, timing.batchN):
        assert lat.p50_ms <= lat.p90_ms <= lat.p95_ms <= lat.p99_ms <= lat.max_ms
    assert timing.settings == {"batch": 32, "warmup": 1, "min_iterations": 5, "min_duration_s": 0.0, "rounds": 1, "sweep": []}


def test_a_failure_is_a_record_with_its_traceback(corpus) -> None:
    score_task, timing_task = plan_tasks([AE], TIMING, len(corpus.files))
    job = {"spec": AE.backend.model_dump(), "model": None, "calibration": np.zeros((4, 8), np.float32),
           "windows": np.zeros((4, 3), np.float32), "file": "x"}
    record, artefacts = execute(timing_task, context(corpus), {"score": {HANDOFF: pickle.dumps(job)}})
    assert record.status == Status.FAILED and record.kind == "timing" and artefacts == {}
    assert record.error.startswith("AttributeError") and "Traceback" in record.traceback


def test_learned_detectors_train_on_the_scenarios_probation(corpus) -> None:
    """With probation 0.10 a learned detector trains on the first 10% only, and scores from there: rows between
    10% and 15% get scores (the leak was training on 15% whatever the scenario said)."""
    params = {**AE.params, "min_history": 10}  # scores from the first scored row on
    cell = AE.model_copy(update={"id": "ae", "backend": None, "params": params})
    (task,) = plan_tasks([cell], TIMING, len(corpus.files))
    scores = {}
    for share in (0.10, 0.15):
        record, artefacts = execute(task, context(corpus, share), {})
        assert record.status == Status.OK, record.traceback
        assert record.result.probation_percent == share
        scores[share] = artefacts[SCORES]
    for f, s10, s15 in zip(corpus.files, scores[0.10], scores[0.15]):
        p10, p15 = probation_rows(f.n_rows, 0.10), probation_rows(f.n_rows, 0.15)
        assert (s10[:p10] == 0).all() and (s15[:p15] == 0).all()
        assert s10[p10:p15].max() > 0, f.name  # scored: not trained on
        assert not np.array_equal(s10[p15:], s15[p15:])  # another training set, another model
