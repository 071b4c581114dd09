"""Latency measurement for one inference function: warm-up, then at least `min_iterations` calls and at least
`min_duration_s` seconds; percentiles from the raw per-call samples (see docs/timing.md).

`time_batches` repeats that in rounds, alternating batch 1 and the large batch, and pools the samples: a slow
phase of the machine (this VM's speed drifts by up to 2x over seconds) then weighs on both batch sizes alike,
and the spread of the rounds' medians says how far a single figure can be trusted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.stats import Summary, spread_pct, summarize



class TimingSpec(BaseModel):
    """A scenario's `timing:` section: how backend latency is measured, and whether alone on a node."""

    model_config = ConfigDict(extra="forbid")

    batch: int = Field(256, ge=2, description="the large batch; batch 1 is always timed too")
    warmup: int = Field(20, ge=0)
    min_iterations: int = Field(100, ge=1)
    min_duration_s: float = Field(1.0, ge=0.0, description="per round and batch size")
    rounds: int = Field(3, ge=1, le=20, description="rounds of both batch sizes, alternating; samples pooled")
    sweep: list[int] = Field(
        default_factory=list, max_length=12,
        description="more batch sizes, each timed in one round after the others: the batch axis of the precision "
        "crossover plot (crossover.png)",
    )
    exclusive: bool = Field(
        True,
        description="time each backend cell alone on a node, after scoring (reserves all its CPUs); false: time "
        "inside the cell, beside whatever else runs (faster, noisier)",
    )

    @field_validator("sweep")
    @classmethod
    def _sweep_sizes(cls, v: list[int]) -> list[int]:
        if any(b < 1 or b > 65536 for b in v):
            raise ValueError("sweep batch sizes must lie in 1..65536")
        return sorted(set(v))

    def measurement(self) -> dict[str, Any]:
        """`time_batches`'s settings (`exclusive` is placement, not measurement)."""
        return self.model_dump(exclude={"exclusive"})


@dataclass
class Latency:
    """Per-call latency of one batch size: the raw samples' summary (milliseconds), the rounds' medians and the
    spread between them (harness.stats)."""

    batch: int
    duration_s: float
    summary: Summary
    rounds_p50_ms: list[float] = field(default_factory=list)
    samples_ms: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_samples(cls, batch: int, samples_ms: np.ndarray, duration_s: float, rounds_p50_ms: list[float] | None = None) -> "Latency":
        ms = np.asarray(samples_ms, dtype=np.float64)
        return cls(batch, duration_s, summarize(ms), list(rounds_p50_ms or []), ms)

    @property
    def p50_ms(self) -> float:
        return self.summary.p50

    @property
    def events_per_s(self) -> float:
        """Events (windows scored) per second at this batch size, from the median call."""
        return self.batch / (self.p50_ms / 1000.0) if self.p50_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        """batch, iterations, duration_s, mean/stdev/min/p50/p90/p95/p99/max in ms, the rounds' medians, their
        spread and events/s: the shape `TimingResult` stores."""
        figures = self.summary.to_dict("_ms")
        figures["iterations"] = figures.pop("count")
        return {
            "batch": self.batch,
            "duration_s": self.duration_s,
            **figures,
            "rounds_p50_ms": self.rounds_p50_ms,
            "spread_pct": spread_pct(self.rounds_p50_ms),
            "events_per_s": self.events_per_s,
        }


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
    return Latency.from_samples(len(batch), np.asarray(samples, dtype=np.float64) / 1e6, elapsed)


def time_batches(
    call: Callable[[np.ndarray], object],
    windows: np.ndarray,
    batch: int = 256,
    warmup: int = 20,
    min_iterations: int = 100,
    min_duration_s: float = 1.0,
    rounds: int = 3,
    sweep: list[int] | tuple[int, ...] = (),
) -> dict[str, dict]:
    """`measure` at batch 1 and at `batch`, `rounds` times each, alternating; percentiles of the pooled samples.
    Then each `sweep` batch size once, in one round (the batch axis of a crossover plot).

    Inputs are real windows: the first one, and the first `batch` (repeated when there are fewer). Returns
    {"batch1": Latency.to_dict(), "batchN": ..., "sweep": {size: ...}}, each with its rounds' medians and their
    spread."""
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    if windows.ndim != 2 or len(windows) == 0:
        raise ValueError(f"timing needs windows shaped (n >= 1, window), got {windows.shape}")
    inputs = {
        "batch1": np.ascontiguousarray(windows[:1]),
        "batchN": np.ascontiguousarray(np.resize(windows, (batch, windows.shape[1]))),  # np.resize repeats rows
    }
    per_round: dict[str, list[Latency]] = {k: [] for k in inputs}
    for _ in range(max(1, rounds)):
        for key, x in inputs.items():
            per_round[key].append(measure(call, x, warmup, min_iterations, min_duration_s))
    out: dict[str, dict] = {
        key: Latency.from_samples(
            len(inputs[key]),
            np.concatenate([lat.samples_ms for lat in lats]),
            sum(lat.duration_s for lat in lats),
            [lat.p50_ms for lat in lats],
        ).to_dict()
        for key, lats in per_round.items()
    }
    out["sweep"] = {}
    for size in sweep:
        lat = measure(call, np.ascontiguousarray(np.resize(windows, (size, windows.shape[1]))), warmup, min_iterations, min_duration_s)
        out["sweep"][int(size)] = Latency.from_samples(size, lat.samples_ms, lat.duration_s, [lat.p50_ms]).to_dict()
    return out
