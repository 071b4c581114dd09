"""One percentile helper for the timing task's latency figures (the load tests' come from their HdrHistogram,
harness.load.recorder).

Percentiles come from the raw samples, never from averages of averages: numpy's default (linear interpolation
between the two nearest ranks). `spread_pct` says how far repeated measurements of the same thing disagreed:
(max - min) / median of the per-round medians, in percent; a difference smaller than it is noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class Summary:
    """Distribution of one set of samples (all in the samples' unit, for example milliseconds)."""

    count: int
    mean: float
    stdev: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def to_dict(self, suffix: str = "") -> dict[str, float]:
        """The fields, each name followed by `suffix` (for example `_ms`), `count` unchanged."""
        return {k if k == "count" else f"{k}{suffix}": v for k, v in asdict(self).items()}


def summarize(samples: Sequence[float] | np.ndarray) -> Summary:
    """Count, mean, standard deviation (ddof 0), min, p50/p90/p95/p99 and max of non-empty samples."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, PERCENTILES))
    return Summary(
        count=int(x.size),
        mean=float(x.mean()),
        stdev=float(x.std()),
        min=float(x.min()),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        max=float(x.max()),
    )


def spread_pct(medians: Sequence[float]) -> float:
    """(max - min) / median of repeated measurements' medians, in percent; 0 with fewer than two."""
    m = np.asarray(medians, dtype=np.float64)
    if m.size < 2:
        return 0.0
    mid = float(np.median(m))
    return 100.0 * float(m.max() - m.min()) / mid if mid > 0 else 0.0
