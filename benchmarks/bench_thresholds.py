"""What a threshold policy costs: each policy applied to every file of NAB v1.1's corpus (365,558 rows), to the
published numenta detector's raw scores ($HARNESS_NAB, else data/nab). Prints seconds; asserts nothing.

    python benchmarks/bench_thresholds.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from harness.corpus.layout import load_corpus
from harness.scoring.results_layout import read_results_dir
from harness.feedback.loop import FeedbackThreshold, LabelReviewer
from harness.scoring.nab import alert_block_rows, probation_rows
from harness.thresholds import Fixed, RollingQuantile, Spot

REPO = Path(__file__).resolve().parents[1]
NAB = Path(os.environ.get("HARNESS_NAB") or REPO / "data" / "nab")


def main() -> None:
    corpus = load_corpus(NAB)
    _, scores = read_results_dir(NAB / "results" / "numenta", corpus)
    times = [np.asarray(f.timestamps, "datetime64[s]").astype(np.float64) for f in corpus.files]
    rows = sum(len(s) for s in scores)
    for policy in (Fixed(value=0.5), RollingQuantile(q=0.99, window_s=86_400, min_history=288),
                   RollingQuantile(q=0.99, window_s=86_400, min_history=288, smoothing=0.1),
                   Spot(risk=1e-3, n_init=750), Spot(risk=1e-3, n_init=750, drift=True)):
        started = time.perf_counter()
        alerts = sum(int(policy.apply(t, s).sum()) for t, s in zip(times, scores))
        took = time.perf_counter() - started
        print(f"{policy!r:<90} {rows:,} rows in {took:.3f} s ({rows / took:,.0f} rows/s), {alerts} alerts")
    feedback = FeedbackThreshold(threshold=0.5)  # with a simulated reviewer whose verdicts arrive a day later
    started = time.perf_counter()
    alerts = sum(int(feedback.apply(t, s, LabelReviewer(t, f.windows, 86_400.0), alert_block_rows(f), probation_rows(f.n_rows)).sum())
                 for f, t, s in zip(corpus.files, times, scores))
    took = time.perf_counter() - started
    print(f"{'FeedbackThreshold(threshold=0.5) + reviewer, 1 day':<90} {rows:,} rows in {took:.3f} s ({rows / took:,.0f} rows/s), {alerts} alerts")


def honest_numbers() -> None:
    """NAB's published detectors: the optimised (oracle) score vs thresholds chosen on other categories."""
    from harness.scoring.profiles import load_profiles
    from harness.thresholds.crossval import cross_validate

    corpus = load_corpus(NAB)
    profiles = load_profiles(NAB / "config" / "profiles.json")
    for detector in ("numenta", "twitterADVec", "windowedGaussian"):
        _, scores = read_results_dir(NAB / "results" / detector, corpus)
        cv = cross_validate(corpus.files, scores, profiles, label_windows=corpus.label_windows)
        print(detector, "  ".join(f"{name}: oracle {r.oracle:.2f} -> cross-validated {r.cross_validated:.2f} (gap {r.gap:.2f})"
                                  for name, r in cv.items()))



def policies_cross_validated() -> None:
    """Each causal policy's parameters chosen on other categories, for NAB's published numenta outputs."""
    from harness.thresholds.evaluate import cross_validate_policy

    corpus = load_corpus(NAB)
    _, scores = read_results_dir(NAB / "results" / "numenta", corpus)
    grids = {
        "fixed": [Fixed(value=v) for v in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)],
        "rolling_quantile": [RollingQuantile(q=q, window_s=w, min_history=288) for q in (0.99, 0.995, 0.999) for w in (86_400, 7 * 86_400)],
        "spot": [Spot(risk=r, n_init=750) for r in (1e-2, 3e-3, 1e-3, 3e-4)],
        "dspot": [Spot(risk=r, n_init=750, drift=True) for r in (1e-2, 3e-3, 1e-3, 3e-4)],
    }
    for name, grid in grids.items():
        started = time.perf_counter()
        cv = cross_validate_policy(corpus.files, scores, grid, label_windows=corpus.label_windows)
        print(f"numenta + {name}: best on all files {cv.oracle:.2f} ({cv.oracle_policy}), cross-validated {cv.cross_validated:.2f} "
              f"({time.perf_counter() - started:.1f} s for {len(grid)} candidates)")


if __name__ == "__main__":
    main()
    honest_numbers()
    policies_cross_validated()
