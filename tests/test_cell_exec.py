"""One backend cell in plain Python (no Ray): scored through the backend, then timed either in the cell or by a
separate timing job, as the runner does for exclusive timing."""

from __future__ import annotations

import pickle

import pytest

from harness.cell_exec import execute_cell, time_job, with_timing
from harness.corpus.layout import load_corpus
from harness.corpus.synthetic import write_corpus
from harness.scoring.profiles import load_profiles

TIMING = {"batch": 32, "warmup": 1, "min_iterations": 5, "min_duration_s": 0.0}
CELL = {
    "id": "ae.onnxruntime-int8-dynamic",
    "detector": "ae",
    "type": "autoencoder",
    "params": {"window": 8, "hidden": 8, "bottleneck": 2, "epochs": 1},
    "backend": {"backend": "onnxruntime", "precision": "int8", "quantization": "dynamic"},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_corpus(write_corpus(tmp_path_factory.mktemp("c") / "corpus", 5, 500))


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))


def test_timing_in_the_cell(corpus) -> None:
    result, job = execute_cell(CELL, corpus, load_profiles(None), None, 0.15, {**TIMING, "exclusive": False})
    assert result["status"] == "ok", result.get("traceback")
    assert job is None
    timing = result["timing"]
    assert timing["exclusive"] is False and timing["settings"] == TIMING
    assert timing["batch1"]["batch"] == 1 and timing["batchN"]["batch"] == 32
    assert timing["batchN"]["iterations"] >= 5 and timing["batchN"]["p95_ms"] >= timing["batchN"]["p50_ms"] > 0
    assert timing["file"] == corpus.files[-1].name
    assert result["backend_info"]["models_prepared"] == len(corpus.files)
    assert result["model_bytes"] == result["backend_info"]["size_bytes"] > 0
    assert result["seconds"]["total"] >= result["seconds"]["detect"] + result["seconds"]["timing"] - 1e-9


def test_exclusive_timing_is_a_separate_picklable_job_that_reuses_the_cache(corpus) -> None:
    result, job = execute_cell(CELL, corpus, load_profiles(None), None, 0.15, {**TIMING, "exclusive": True})
    assert result["status"] == "ok" and "timing" not in result
    job = pickle.loads(pickle.dumps(job))  # it travels to another Ray task
    assert job["windows"].shape == (32, 8)
    timed = time_job(job)
    assert timed["timing"]["cache"] == "hit" and timed["timing"]["exclusive"] is True  # prepared by the cell already
    merged = with_timing(result, timed)
    assert merged["status"] == "ok" and merged["timing"]["batch1"]["iterations"] >= 5
    assert merged["report"] == result["report"]


def test_a_timing_failure_fails_the_cell(corpus) -> None:
    result, job = execute_cell(CELL, corpus, load_profiles(None), None, 0.15, {**TIMING, "exclusive": True})
    job["windows"] = job["windows"][:, :3]  # the model reads 8 records
    merged = with_timing(result, time_job(job))
    assert merged["status"] == "failed" and merged["error"].startswith("timing: ")
    assert "scores" not in merged and "Traceback" in merged["traceback"]


def test_a_cell_with_no_backend_has_no_job(corpus) -> None:
    cell = {**CELL, "id": "ae", "backend": None}
    result, job = execute_cell(cell, corpus, load_profiles(None), None, 0.15, {**TIMING, "exclusive": True})
    assert result["status"] == "ok" and job is None and "timing" not in result and "model_bytes" not in result
