"""What a served stream's chunk costs in the anomaly likelihood (the learned detectors' defaults: a 4000-value
history, the 0.995 quantile, suppression over 400 records), and its parts against pandas, which computed them
before; and the autoencoder's reconstruction errors of 10,000 windows in each error mode. Prints figures;
asserts nothing.

    python benchmarks/bench_likelihood_chunks.py

To compare with older code, run it with that checkout first on PYTHONPATH (`git worktree add /tmp/before REV`,
then `PYTHONPATH=/tmp/before python benchmarks/bench_likelihood_chunks.py`): the update_many lines then time the
old code; the pandas lines are the same either way.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from harness.detectors.likelihood import StreamingLikelihood

L, Q, SUPPRESS = 4000, 0.995, 400


def ms(f, repeat: int = 50) -> float:
    """Best of 3 means of `repeat` calls, in ms."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            f()
        best = min(best, (time.perf_counter() - t) / repeat * 1000)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    for tail in ("quantile", "gauss"):
        for k in (1250, 10_000):
            s = StreamingLikelihood(start=400, long_window=L, tail=tail, quantile=Q, suppress=SUPPRESS)
            s.update_many(np.abs(rng.normal(size=20_000)))
            chunks = iter([np.abs(rng.normal(size=k)) for _ in range(200)])
            print(f"StreamingLikelihood.update_many, tail={tail}, {k:,} values a chunk: "
                  f"{ms(lambda: s.update_many(next(chunks)), repeat=60):.3f} ms")
    from harness.detectors.autoencoder import DenseAutoencoder

    for mode in ("newest", "mean", "max"):
        det = DenseAutoencoder(error=mode)
        w = det.params.window
        outputs, targets = (rng.normal(size=(10_000, w)).astype(np.float32) for _ in range(2))
        print(f"DenseAutoencoder.errors, error={mode}, 10,000 windows of {w}: "
              f"{ms(lambda: det.errors(targets, outputs, targets)):.3f} ms")
    try:
        from harness.detectors.likelihood import window_max
        from harness.detectors.rolling_quantile import chunk_quantiles, top_ranks
    except ImportError:
        return  # older code: only update_many is comparable
    ranks = top_ranks(L, Q)
    for k in (1250, 10_000):
        hist = np.abs(rng.normal(size=L + k))
        pandas_q = ms(lambda: pd.Series(hist).shift(1).rolling(L, min_periods=100).quantile(Q).to_numpy()[L:])
        ours_q = ms(lambda: chunk_quantiles(hist, L, L, Q, 100, ranks))
        placed = np.concatenate([np.full(SUPPRESS, -np.inf), rng.random(k)])
        pandas_m = ms(lambda: pd.Series(placed).shift(1).rolling(SUPPRESS, min_periods=1).max().to_numpy()[SUPPRESS:])
        ours_m = ms(lambda: window_max(placed[:-1], SUPPRESS))
        print(f"{k:,} new values: rolling {Q} quantile of {L}: pandas {pandas_q:.3f} ms, chunk_quantiles {ours_q:.3f} ms; "
              f"rolling max of {SUPPRESS}: pandas {pandas_m:.3f} ms, window_max {ours_m:.3f} ms")


if __name__ == "__main__":
    main()
