"""LSTMForecaster: an LSTM predicts each normalised record from the `window` records before it; error = |miss|.

The LSTM (`torch_models.LinearLSTM`) is built from `nn.Linear` gate layers unrolled over the window in `forward`
(not `nn.LSTM`), so that its ONNX export keeps named weights that backends can quantize.

Training adds random spikes to the input windows (`spike_prob`; the targets stay clean). A plain forecaster misses
twice on a one-record spike: on the spike, and on the next record, forecast from a window that holds the spike.
Trained to look through outliers, it misses mostly on the spike itself (NAB +3 points: fewer repeated alerts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

if TYPE_CHECKING:
    from torch import nn

from harness.detectors.learned import LearnedDetector, LearnedParams


class LSTMParams(LearnedParams):
    """Defaults: the best found on NAB v1.1 (benchmarks/bench_learned_nab.py)."""

    window: int = Field(16, ge=2, le=512, description="records the forecast reads")
    epochs: int = Field(20, ge=0, le=1000)
    train_batch: int = Field(32, ge=1)
    lr: float = Field(1e-2, gt=0.0)
    spike_prob: float = Field(0.1, ge=0.0, le=1.0, description="training only: chance of a spike on each input value")
    hidden: int = Field(16, ge=1, le=1024, description="LSTM hidden size")
    residual: Literal["last", "mean", "none"] = Field(
        "last", description="the forecast is the head's output plus the window's last value, its mean, or nothing"
    )


class LSTMForecaster(LearnedDetector):
    """Next-value forecaster; the error of record i is |prediction from records i-window..i-1 - record i|."""

    Params = LSTMParams

    @property
    def lag(self) -> int:
        return self.params.window

    def build_model(self) -> "nn.Module":
        from harness.detectors.torch_models import LinearLSTM

        return LinearLSTM(self.params.window, self.params.hidden, self.params.residual)

    def split_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = np.require(windows[:, :-1], np.float32, ["C", "W"])
        return inputs, np.require(windows[:, -1:], np.float32, ["C", "W"])  # targets (N, 1), like the outputs

    def errors(self, inputs: np.ndarray, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return np.abs(np.asarray(outputs, np.float64).reshape(-1) - np.asarray(targets, np.float64).reshape(-1))
