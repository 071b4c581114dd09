"""The scoring task: one cell's detector over every corpus file, record by record or vectorised (the detector's
`score_file`), with the scenario's probationary period; then NAB scoring of the whole corpus, and beside it what
the detector misses by anomaly kind, the cross-validated number and the threshold policies.

A backend cell's detector runs its inference on that backend; what the timing task needs to time it (the last
file's model and calibration, and real windows of it) is handed over (harness.tasks.handoff).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from harness.results.folder import CURVE, HANDOFF, SCORES
from harness.results.schema import NabResult, PolicyFigures, ScoreResult
from harness.scoring.nab import probation_rows
from harness.scoring.profiles import REFERENCE_PROFILE
from harness.tasks.base import ReportProgress, RunContext, Task
from harness.tasks.handoff import ModelHandoff
from harness.thresholds.crossval import score_like_a_cell
from harness.thresholds.spec import PolicySpec


def run(task: Task, ctx: RunContext, inputs: dict[str, Any], progress: ReportProgress) -> tuple[ScoreResult, dict[str, Any]]:
    from harness.detectors import build_detector

    cell = task.cell
    started = time.perf_counter()
    detector = build_detector(cell.type, cell.params, cell.backend, cell.pruning)
    scores = score_files(detector, ctx, progress)
    detect_s = time.perf_counter() - started
    thresholds = ctx.thresholds[cell.detector] if ctx.thresholds else None
    report, cv = score_like_a_cell(ctx.corpus.files, scores, cell.detector, thresholds, ctx.profiles,
                                   ctx.probation_percent, ctx.corpus.label_windows)
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
    _beside_nab(result, ctx, scores, report.profiles[REFERENCE_PROFILE].threshold, cv)
    if cell.backend is not None:
        artefacts[HANDOFF] = _handoff(detector, cell, ctx, result).to_bytes()
    return result, artefacts


def score_files(detector: Any, ctx: RunContext, progress: ReportProgress) -> list[np.ndarray]:
    """The detector's scores of every corpus file (one finite score per row), with the run's probation."""
    scores = []
    for f in ctx.corpus.files:
        s = np.asarray(detector.score_file(f, probation_rows(f.n_rows, ctx.probation_percent)), dtype=np.float64)
        if s.shape != (f.n_rows,) or not np.isfinite(s).all():
            raise ValueError(f"{f.name}: detector returned {s.shape} scores (finite: {np.isfinite(s).all()}), expected {f.n_rows} finite")
        scores.append(s)
        progress(1)
    return scores


def _beside_nab(result: ScoreResult, ctx: RunContext, scores: list[np.ndarray], at: float,
                cv: dict[str, Any] | None) -> None:
    """What the table shows beside NAB's score: recall by anomaly kind (at the reference profile's threshold `at`)
    when the corpus names kinds; with the cross-validated number (`cv`: optimised thresholds over two categories
    or more), that number and every threshold policy's figures."""
    files = ctx.corpus.files
    if any(f.anomaly_kinds for f in files):
        from harness.corpus.inject import recall_by_kind

        result.recall_by_kind = recall_by_kind([f.windows for f in files], [f.anomaly_kinds or [] for f in files],
                                               [s >= at for s in scores], [probation_rows(f.n_rows, ctx.probation_percent) for f in files])
    if cv is not None:  # the honest number beside NAB's
        result.cross_validated = {name: r.cross_validated for name, r in cv.items()}
        result.cv_folds = {name: r.folds for name, r in cv.items()}
        result.policies = [policy_figures(spec, ctx, scores) for spec in ctx.policies]


def _handoff(detector: Any, cell: Any, ctx: RunContext, result: ScoreResult) -> ModelHandoff:
    """The backend's figures into `result`, and what the timing task needs: the last file's model."""
    if detector.last_compiled is None:
        raise RuntimeError("the backend never ran: no file had rows to score")
    info = detector.backend_summary()
    result.model_bytes, result.backend_info, result.prepare_s = detector.last_compiled.size_bytes, info, info["prepare_s_total"]
    windows = np.ascontiguousarray(detector.scored_windows()[: max(ctx.timing.batch, 1)])
    return ModelHandoff(cell.backend, detector.last_model, detector.last_calibration, windows, ctx.corpus.files[-1].name)


def policy_figures(spec: PolicySpec, ctx: RunContext, scores: list[np.ndarray]) -> PolicyFigures:
    """A threshold policy's candidates over the cell's scores: the oracle, the cross-validated number, and the
    oracle candidate's detection metrics at NAB's reference profile."""
    from harness.thresholds.evaluate import alerts, cross_validate_policy, score_alerts

    started = time.perf_counter()
    candidates = spec.candidates()
    reference = next(p for p in ctx.profiles if p.name == REFERENCE_PROFILE)
    cv = cross_validate_policy(ctx.corpus.files, scores, candidates, reference, ctx.corpus.label_windows, ctx.probation_percent)
    best = next(c for c in candidates if repr(c) == cv.oracle_policy)
    alerted = alerts(best, ctx.corpus.files, scores)
    at = score_alerts(ctx.corpus.files, alerted, ctx.profiles, ctx.corpus.label_windows, ctx.probation_percent).detection[REFERENCE_PROFILE]
    first = [probation_rows(f.n_rows, ctx.probation_percent) for f in ctx.corpus.files]
    return PolicyFigures(policy=spec.type, oracle_params=cv.oracle_policy, nab_standard=cv.oracle, nab_standard_cv=cv.cross_validated,
                         folds=cv.folds, f1=at.f1, precision=at.precision, recall=at.recall, latency_mean_s=at.latency_mean_s,
                         fp_events=at.fp_events, seconds=time.perf_counter() - started,
                         alert_rows=int(sum(a[p:].sum() for a, p in zip(alerted, first))),
                         scored_rows=int(sum(f.n_rows - p for f, p in zip(ctx.corpus.files, first))))
