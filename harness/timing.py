"""Latency measurement for one inference function: warm-up, then at least `min_iterations` calls and at least
`min_duration_s` seconds; percentiles from the raw per-call samples (see docs/timing.md)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass
class Latency:
    batch: int
    iterations: int
    duration_s: float
    p50_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float

    @property
    def events_per_s(self) -> float:
        """Events (windows scored) per second at this batch size, from the median call."""
        return self.batch / (self.p50_ms / 1000.0) if self.p50_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "events_per_s": self.events_per_s}


def measure(
    call: Callable[[np.ndarray], object],
    batch: np.ndarray,
    warmup: int = 20,
    min_iterations: int = 100,
    min_duration_s: float = 1.0,
    max_duration_s: float = 30.0,
) -> Latency:
    """Time `call(batch)` until both minimums are met (or `max_duration_s` passes, after `min_iterations`)."""
    for _ in range(warmup):
        call(batch)
    samples: list[int] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        call(batch)
        samples.append(time.perf_counter_ns() - t0)
        elapsed = time.perf_counter() - start
        if len(samples) >= min_iterations and (elapsed >= min_duration_s or elapsed >= max_duration_s):
            break
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    return Latency(
        batch=len(batch),
        iterations=len(ms),
        duration_s=elapsed,
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
    )
