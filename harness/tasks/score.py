"""The scoring task: one cell's detector over every corpus file, record by record or vectorised (the detector's
`score_file`), with the scenario's probationary period; then NAB scoring of the whole corpus.

A backend cell's detector runs its inference on that backend; what the timing task needs to time it (the last
file's model and calibration, and real windows of it) is handed over as a pickle.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np

from harness.results.folder import CURVE, HANDOFF, SCORES
from harness.results.schema import NabResult, PolicyFigures, ScoreResult
from harness.scoring.nab import probation_rows, score_detector
from harness.tasks.base import Progress, RunContext, Task
from harness.thresholds.crossval import category, cross_validate


def run(task: Task, ctx: RunContext, inputs: dict[str, Any], progress: Progress) -> tuple[ScoreResult, dict[str, Any]]:
    from harness.detectors import resolve_detector

    cell = task.cell
    started = time.perf_counter()
    detector = resolve_detector(cell.type)(**cell.params)
    if cell.backend is not None:
        detector.use_backend(cell.backend)
    scores = []
    for f in ctx.corpus.files:
        s = np.asarray(detector.score_file(f, probation_rows(f.n_rows, ctx.probation_percent)), dtype=np.float64)
        if s.shape != (f.n_rows,) or not np.isfinite(s).all():
            raise ValueError(f"{f.name}: detector returned {s.shape} scores (finite: {np.isfinite(s).all()}), expected {f.n_rows} finite")
        scores.append(s)
        progress(1)
    detect_s = time.perf_counter() - started
    thresholds = ctx.thresholds[cell.detector] if ctx.thresholds else None
    report = score_detector(
        ctx.corpus.files, scores, cell.detector, thresholds, ctx.profiles, ctx.probation_percent, ctx.corpus.label_windows
    )
    curve = report.pr_curve
    artefacts: dict[str, Any] = {
        SCORES: scores,
        CURVE: {"threshold": curve.thresholds, "precision": curve.precision, "recall": curve.recall},
    }
    result = ScoreResult(
        nab=NabResult(profiles=report.profiles, detection=report.detection),
        files=len(ctx.corpus.files),
        rows=ctx.corpus.n_rows,
        probation_percent=ctx.probation_percent,
        detect_s=detect_s,
    )
    if any(f.kinds for f in ctx.corpus.files):  # what the detector misses, by anomaly kind
        from harness.corpus.inject import recall_by_kind

        at = report.profiles["standard"].threshold
        result.recall_by_kind = recall_by_kind([f.windows for f in ctx.corpus.files], [f.kinds or [] for f in ctx.corpus.files],
                                               [s >= at for s in scores], [probation_rows(f.n_rows, ctx.probation_percent) for f in ctx.corpus.files])
    if thresholds is None and len({category(f) for f in ctx.corpus.files}) >= 2:  # the honest number beside NAB's
        cv = cross_validate(ctx.corpus.files, scores, ctx.profiles, ctx.probation_percent, ctx.corpus.label_windows)
        result.cross_validated = {name: r.cross_validated for name, r in cv.items()}
        result.cv_folds = {name: r.folds for name, r in cv.items()}
        result.policies = [policy_figures(spec, ctx, scores) for spec in ctx.policies]
    if cell.backend is not None:
        if detector.last_compiled is None:
            raise RuntimeError("the backend never ran: no file had rows to score")
        info = detector.backend_summary()
        result.model_bytes, result.backend_info, result.prepare_s = detector.last_compiled.size_bytes, info, info["prepare_s_total"]
        artefacts[HANDOFF] = pickle.dumps(
            {
                "spec": cell.backend.model_dump(),
                "model": detector.last_model,
                "calibration": detector.last_calibration,
                "windows": np.ascontiguousarray(detector.scored_windows()[: max(int(ctx.timing.get("batch", 256)), 1)]),
                "file": ctx.corpus.files[-1].name,
            }
        )
    return result, artefacts


def policy_figures(spec: dict[str, Any], ctx: RunContext, scores: list[np.ndarray]) -> PolicyFigures:
    """A threshold policy's candidates over the cell's scores: the oracle, the cross-validated number, and the
    oracle candidate's detection metrics at NAB's standard profile."""
    from harness.scenario import PolicySpec
    from harness.thresholds.evaluate import alerts, cross_validate_policy, score_alerts

    started = time.perf_counter()
    candidates = PolicySpec.model_validate(spec).candidates()
    standard = next(p for p in ctx.profiles if p.name == "standard")
    cv = cross_validate_policy(ctx.corpus.files, scores, candidates, standard, ctx.corpus.label_windows, ctx.probation_percent)
    best = next(c for c in candidates if repr(c) == cv.oracle_policy)
    at = score_alerts(ctx.corpus.files, alerts(best, ctx.corpus.files, scores), ctx.profiles, ctx.corpus.label_windows,
                      ctx.probation_percent).detection["standard"]
    return PolicyFigures(policy=spec["type"], oracle_params=cv.oracle_policy, nab_standard=cv.oracle, nab_standard_cv=cv.cross_validated,
                         folds=cv.folds, f1=at.f1, precision=at.precision, recall=at.recall, latency_mean_s=at.latency_mean_s,
                         fp_events=at.fp_events, seconds=time.perf_counter() - started)
