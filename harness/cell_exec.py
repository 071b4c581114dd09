"""Run one cell: a detector over every corpus file, then NAB scoring. Plain Python; the runner ships it to Ray."""

from __future__ import annotations

import time
import traceback
from typing import Any

import numpy as np

from harness.corpus.layout import Corpus
from harness.scoring.nab import score_detector
from harness.scoring.profiles import Profile


def execute_cell(
    cell: dict[str, Any],
    corpus: Corpus,
    profiles: tuple[Profile, ...],
    thresholds: dict[str, float] | None,
    probation_percent: float,
    timing: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(result, timing job). result: {"status": "ok", scores, report, curve, seconds[, model_bytes, backend_info]}
    or {"status": "failed", error, traceback}.

    A cell with a `backend` runs its detector's inference there. Its latency is measured on the last file's model
    and windows (docs/timing.md): here, unless `timing["exclusive"]`, in which case the second value is the
    job for `time_job`, which the runner runs alone on a node. A failure is data, not an exception: the run
    records it and goes on with the other cells.
    """
    from harness.detectors import resolve_detector

    timing = dict(timing or {})
    exclusive = timing.pop("exclusive", False)
    started = time.perf_counter()
    try:
        detector = resolve_detector(cell["type"])(**cell["params"])
        if cell.get("backend"):
            detector.use_backend(cell["backend"])
        scores = []
        for f in corpus.files:
            s = np.asarray(detector.score_file(f), dtype=np.float64)
            if s.shape != (f.n_rows,) or not np.isfinite(s).all():
                raise ValueError(f"{f.name}: detector returned {s.shape} scores (finite: {np.isfinite(s).all()}), expected {f.n_rows} finite")
            scores.append(s)
        detect_s = time.perf_counter() - started
        report = score_detector(
            corpus.files, scores, cell["detector"], thresholds, profiles, probation_percent, corpus.label_windows
        )
        curve = report.pr_curve
        result = {
            "status": "ok",
            "scores": scores,
            "report": report.to_dict(),
            "curve": {"threshold": curve.thresholds, "precision": curve.precision, "recall": curve.recall},
            "seconds": {"detect": detect_s},
            "rows": corpus.n_rows,
        }
        job = None
        if cell.get("backend"):
            if detector.last_compiled is None:
                raise RuntimeError("the backend never ran: no file had rows to score")
            result["model_bytes"] = detector.last_compiled.size_bytes
            result["backend_info"] = detector.backend_summary()
            result["seconds"]["prepare"] = result["backend_info"]["prepare_s_total"]
            job = {
                "spec": cell["backend"],
                "model": detector.last_model,
                "calibration": detector.last_calibration,
                "windows": detector.scored_windows()[: max(timing.get("batch", 256), 1)].copy(),
                "file": corpus.files[-1].name,
                "settings": timing,
                "exclusive": exclusive,
            }
        result["seconds"]["total"] = time.perf_counter() - started
        if job is not None and not exclusive:
            return with_timing(result, time_job(job, detector.last_compiled)), None
        return result, job
    except Exception as exc:  # noqa: BLE001 - any detector failure is recorded, never fatal to the run
        return failure(exc, started), None


def failure(exc: BaseException, started: float) -> dict[str, Any]:
    return {
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
        "traceback": traceback.format_exc(),
        "seconds": {"total": time.perf_counter() - started},
    }


def time_job(job: dict[str, Any], compiled: Any = None) -> dict[str, Any]:
    """{"timing": ...}: latency at batch 1 and the large batch of the job's model on its backend and windows.

    Without `compiled` (the model already prepared in this process), the model is prepared again from the
    artefacts the cell cached, so this can run in another process than the cell: alone on a node, for figures
    no other cell's work disturbs."""
    from harness.backends import prepare
    from harness.timing import time_batches

    started = time.perf_counter()
    try:
        if compiled is None:
            compiled = prepare(job["spec"], job["model"], job["calibration"])
        figures = time_batches(compiled.infer, job["windows"], **job["settings"])
        return {
            "timing": {
                **figures,
                "file": job["file"],
                "settings": job["settings"],
                "exclusive": job["exclusive"],
                "cache": compiled.info.get("cache"),
            },
            "seconds_timing": time.perf_counter() - started,
        }
    except Exception as exc:  # noqa: BLE001
        return failure(exc, started)


def with_timing(result: dict[str, Any], timed: dict[str, Any]) -> dict[str, Any]:
    """The cell's result with `time_job`'s figures in it; a timing failure fails the cell (its scores are kept
    out: a row without its figures would look complete)."""
    if timed.get("status") == "failed":
        return {**timed, "error": f"timing: {timed['error']}", "seconds": result["seconds"]}
    seconds = {**result["seconds"], "timing": timed["seconds_timing"]}
    seconds["total"] = seconds.get("total", 0.0) + timed["seconds_timing"]
    return {**result, "timing": timed["timing"], "seconds": seconds}
