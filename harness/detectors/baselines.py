"""Baselines every leaderboard needs: a constant, a seeded coin, and a windowed Gaussian (rolling z-score)."""

from __future__ import annotations

import math
import zlib

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.corpus.layout import SeriesFile
from harness.detectors.base import Stream, StreamingDetector


class NullDetector(StreamingDetector):
    """Constant 0.5: NAB's lower bound (it never detects at an optimized threshold)."""

    def score_one(self, timestamp, value) -> float:
        return 0.5

    def score_file(self, series: SeriesFile, probation: int) -> np.ndarray:
        return np.full(series.n_rows, 0.5)


class RandomParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, ge=0)


class RandomDetector(StreamingDetector):
    """Uniform random scores, seeded per (seed, stream name) so runs and re-runs agree."""

    Params = RandomParams

    def start(self, stream: Stream) -> None:
        self._rng = np.random.default_rng([self.params.seed, zlib.crc32(stream.name.encode())])

    def score_one(self, timestamp, value) -> float:
        return float(self._rng.random())

    def score_file(self, series: SeriesFile, probation: int) -> np.ndarray:
        self.start(Stream(series.name, probation, series.n_rows))
        return self._rng.random(series.n_rows)


class GaussianParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int = Field(1000, ge=2, description="how many previous records the mean and deviation cover")
    min_samples: int = Field(10, ge=2, description="records needed before scoring (earlier ones score 0)")

    @model_validator(mode="after")
    def _reachable(self) -> "GaussianParams":
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must not exceed window ({self.window})")
        return self


class WindowedGaussian(StreamingDetector):
    """Score = erf(|z| / sqrt 2), z from the mean and deviation of the previous `window` records.

    That is the probability mass of a Gaussian closer to its mean than the record: 0 at the mean, towards 1
    far from it. A zero deviation with a differing record scores 1.

    Record by record, the last `window` values sit in a ring buffer: the cost per record is bounded by the
    window, not by the length of the stream.
    """

    Params = GaussianParams

    def start(self, stream: Stream) -> None:
        self._ring = np.empty(self.params.window)
        self._seen = 0

    def score_one(self, timestamp, value) -> float:
        if self._seen < self.params.min_samples:
            return 0.0
        recent = self._ring[: min(self._seen, self.params.window)]
        return float(_score(value, recent.mean(), recent.std()))

    def learn_one(self, timestamp, value) -> None:
        self._ring[self._seen % self.params.window] = value
        self._seen += 1

    def score_many(self, timestamps, values) -> np.ndarray:
        """Vectorised over the chunk: the window's values in order, then the chunk, through `_rolling_scores`."""
        values = np.asarray(values, dtype=np.float64)
        w, seen = self.params.window, self._seen
        history = self._ring[:seen] if seen <= w else np.roll(self._ring, -(seen % w))
        out = _rolling_scores(np.concatenate([history, values]), w, self.params.min_samples)[len(history):]
        tail = values[-w:]
        slots = (seen + len(values) - len(tail) + np.arange(len(tail))) % w
        self._ring[slots] = tail
        self._seen = seen + len(values)
        return out

    def score_file(self, series: SeriesFile, probation: int) -> np.ndarray:
        return _rolling_scores(np.asarray(series.values, dtype=np.float64), self.params.window, self.params.min_samples)


def _rolling_scores(x: np.ndarray, window: int, min_samples: int) -> np.ndarray:
    """The score of every value of x from the (up to `window`) values before it; 0 before `min_samples`."""
    import pandas as pd

    rolling = pd.Series(x).rolling(window, min_periods=min_samples)
    mean = rolling.mean().shift(1).to_numpy()
    std = rolling.std(ddof=0).shift(1).to_numpy()
    return np.where(np.isnan(mean), 0.0, _score(x, mean, std))


def _score(x, mean, std):
    x, mean, std = np.asarray(x), np.asarray(mean), np.asarray(std)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(x - mean) / std
    z = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), z, np.where(np.abs(x - mean) > 1e-12, np.inf, 0.0))
    return _erf(z / math.sqrt(2.0))


def _erf(z: np.ndarray) -> np.ndarray:
    from math import erf

    return np.vectorize(erf, otypes=[np.float64])(z) if np.ndim(z) else np.float64(erf(float(z)))
