"""User-style detectors loaded by import path (`userdet:Class`): a package, so the runner can ship it to Ray workers in the run tests."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from harness.detectors import StreamingDetector


class Exploding(StreamingDetector):
    """Fails on the first file: a failed cell must be recorded while the run goes on."""

    def score_file(self, series):
        raise RuntimeError(f"boom on {series.name}")


class JumpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gain: float = 1.0  # any sign: only its magnitude matters


class LastValueJump(StreamingDetector):
    """|x_i - x_{i-1}| squashed to [0, 1): causal, deterministic, and better than chance on spikes."""

    Params = JumpParams

    def score_file(self, series):
        x = series.values
        d = np.abs(np.diff(x, prepend=x[0]))
        scale = np.maximum.accumulate(d) + 1e-9
        return d / scale * 0.999
