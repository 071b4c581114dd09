"""What a threshold policy costs: each policy applied to every file of NAB v1.1's corpus (365,558 rows), to the
published numenta detector's raw scores (../shared/nab, or $HARNESS_NAB). Prints seconds; asserts nothing.

    python benchmarks/bench_thresholds.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from harness.corpus.layout import load_corpus
from harness.scoring.results_layout import read_results_dir
from harness.thresholds import Fixed, RollingQuantile, Spot

REPO = Path(__file__).resolve().parents[1]
NAB = Path(os.environ.get("HARNESS_NAB") or REPO.parent / "shared" / "nab")


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


if __name__ == "__main__":
    main()
    honest_numbers()
