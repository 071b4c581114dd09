"""The detector interface: streaming and causal, river-style.

A detector sees one file's records in order. `score_one` returns the anomaly score of the record it is given,
computed from that record and the ones before it only; `learn_one` then lets it update its state. One set of
parameters serves the whole corpus; `reset` starts a new file. `score_file` runs a whole file and may be
overridden by a vectorised equivalent (tests prove both agree and stay causal).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from harness.corpus.layout import SeriesFile


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamingDetector:
    Params: ClassVar[type[BaseModel]] = NoParams
    uses_backends: ClassVar[bool] = False  # True: a model whose inference a scenario's `backends` can swap

    def __init__(self, **params):
        self.params = self.Params.model_validate(params)

    def reset(self, series: SeriesFile) -> None:
        """Forget everything: a new file begins."""

    def score_one(self, timestamp: np.datetime64, value: float) -> float:
        raise NotImplementedError

    def learn_one(self, timestamp: np.datetime64, value: float) -> None:
        """Update state with the record just scored (default: stateless)."""

    def score_file(self, series: SeriesFile) -> np.ndarray:
        """Scores of every record, in order; each from the records up to it."""
        assert series.timestamps is not None and series.values is not None
        self.reset(series)
        out = np.empty(series.n_rows)
        for i, (t, x) in enumerate(zip(series.timestamps, series.values.tolist())):
            out[i] = self.score_one(t, x)
            self.learn_one(t, x)
        return out
