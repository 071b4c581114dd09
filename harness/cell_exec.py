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
) -> dict[str, Any]:
    """Returns {"status": "ok", scores, report, curve, seconds} or {"status": "failed", error, traceback}.

    A failure is data, not an exception: the run records it and goes on with the other cells.
    """
    from harness.detectors import resolve_detector

    started = time.perf_counter()
    try:
        detector = resolve_detector(cell["type"])(**cell["params"])
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
        return {
            "status": "ok",
            "scores": scores,
            "report": report.to_dict(),
            "curve": {"threshold": curve.thresholds, "precision": curve.precision, "recall": curve.recall},
            "seconds": {"detect": detect_s, "total": time.perf_counter() - started},
            "rows": corpus.n_rows,
        }
    except Exception as exc:  # noqa: BLE001 - any detector failure is recorded, never fatal to the run
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
            "traceback": traceback.format_exc(),
            "seconds": {"total": time.perf_counter() - started},
        }
