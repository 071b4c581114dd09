"""When an open-loop generator means to send each request: offsets in seconds from the start of the run, fixed
before the run and independent of how the service answers (what makes the loop open).

- constant: request i at i / rate (evenly paced; the easiest load to reason about);
- poisson: exponential gaps of mean 1 / rate (many independent users: bursts and lulls at the same mean rate,
  which queues feel much more than an even pace). Seeded, so a run can be repeated exactly.
"""

from __future__ import annotations

from itertools import count
from typing import Iterator, Literal

import numpy as np

Arrivals = Literal["constant", "poisson"]
_BLOCK = 4096  # exponential gaps drawn per numpy call


def constant(rate: float) -> Iterator[float]:
    """0, 1/rate, 2/rate, ... (computed from i, not summed, so there is no drift over long runs)."""
    _check(rate)
    return (i / rate for i in count())


def poisson(rate: float, seed: int = 0) -> Iterator[float]:
    """Arrival times of a Poisson process of `rate` per second starting at 0 (the first arrival after a gap)."""
    _check(rate)
    rng = np.random.default_rng(seed)
    t = 0.0
    while True:
        times = t + np.cumsum(rng.exponential(1.0 / rate, _BLOCK))
        yield from times.tolist()
        t = float(times[-1])


def offsets(arrivals: Arrivals, rate: float, seed: int = 0) -> Iterator[float]:
    """The intended send offsets of `arrivals` at `rate`, without end (the runner stops taking them)."""
    if arrivals == "constant":
        return constant(rate)
    if arrivals == "poisson":
        return poisson(rate, seed)
    raise ValueError(f"unknown arrivals {arrivals!r} (expected 'constant' or 'poisson')")


def _check(rate: float) -> None:
    if not rate > 0:
        raise ValueError(f"rate must be > 0 requests per second, got {rate}")
