"""The detector interface: streaming and causal, river-style.

A detector sees one stream's records in order, one at a time. `start(stream)` begins a stream (forgetting the
previous one) and says how many of its first records are probationary: the detector may learn from them, and
they are not scored. `score_one` returns the anomaly score of the record it is given, computed from that record
and the ones before it only; `learn_one` then lets it update its state. Nothing needs the whole stream up front,
so the same object serves an offline corpus file and a live stream.

`score_file` runs a whole file and may be overridden by a vectorised equivalent; tests prove the two agree (to a
stated tolerance) and stay causal. One set of parameters serves the whole corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from harness.corpus.layout import SeriesFile


@dataclass(frozen=True)
class Stream:
    """What a detector is told when a stream begins.

    `name` identifies the stream (seeded detectors derive their seed from it, so a file and its replay agree);
    `probation` is the number of leading records that are not scored (NAB's probationary period, from the
    scenario); `length` is the number of records when it is known in advance (an offline file), else None.
    """

    name: str
    probation: int
    length: int | None = None

    def __post_init__(self) -> None:
        if self.probation < 0 or (self.length is not None and self.length < 0):
            raise ValueError(f"stream {self.name!r}: probation and length must be >= 0")


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamingDetector:
    Params: ClassVar[type[BaseModel]] = NoParams
    uses_backends: ClassVar[bool] = False  # True: a model whose inference a scenario's `backends` can swap
    trains_at_probation: ClassVar[bool] = False  # True: the record after the probation is costly (a model trains)

    def __init__(self, **params):
        self.params = self.Params.model_validate(params)

    def start(self, stream: Stream) -> None:
        """Forget everything: a new stream begins."""

    def score_one(self, timestamp: np.datetime64, value: float) -> float:
        raise NotImplementedError

    def learn_one(self, timestamp: np.datetime64, value: float) -> None:
        """Update state with the record just scored (default: stateless)."""

    def score_many(self, timestamps: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The next records of the current stream, in order: each scored (`score_one`), then learned
        (`learn_one`). What a service calls with the events of one stream that arrived together; detectors may
        vectorise it, within the tolerance tests/test_streaming.py states for the record-by-record path."""
        out = np.empty(len(values))
        for i, (t, x) in enumerate(zip(timestamps, np.asarray(values, dtype=np.float64).tolist())):
            out[i] = self.score_one(t, x)
            self.learn_one(t, x)
        return out

    def score_file(self, series: SeriesFile, probation: int) -> np.ndarray:
        """Scores of every record of a file, in order, each from the records up to it; the first `probation`
        records form the probationary period."""
        assert series.timestamps is not None and series.values is not None
        self.start(Stream(series.name, probation, series.n_rows))
        return StreamingDetector.score_many(self, series.timestamps, series.values)  # record by record
