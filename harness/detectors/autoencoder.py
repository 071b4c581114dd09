"""DenseAutoencoder: reconstructs the sliding window of the last `window` normalised records through a bottleneck;
the error of record i is the reconstruction error of the window ending at i.

Plain `nn.Linear` layers (ONNX-exportable, quantizable). By default the window goes in as it is, so a level never
seen in training reads as an error; `centre=True` subtracts each window's mean inside the model (and adds it
back), which makes it blind to levels (worse on NAB).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

if TYPE_CHECKING:
    from torch import nn

from harness.detectors.learned import LearnedDetector, LearnedParams


class AEParams(LearnedParams):
    """Defaults: the best found on NAB v1.1 (benchmarks/bench_learned_nab.py)."""

    hidden: int = Field(32, ge=1, le=4096, description="width of the encoder's and decoder's hidden layer")
    bottleneck: int = Field(8, ge=1, le=1024, description="width of the code")
    depth: int = Field(0, ge=0, le=8, description="hidden x hidden layers on each side (square products: what INT8 speeds up)")
    centre: bool = Field(False, description="centre each window on its mean inside the model (level-blind)")
    error: Literal["newest", "mean", "max"] = Field("newest", description="which part of the reconstruction error")


class DenseAutoencoder(LearnedDetector):
    Params = AEParams

    @property
    def lag(self) -> int:
        return self.params.window - 1

    def build_model(self) -> "nn.Module":
        from harness.detectors.torch_models import DenseAE

        p = self.params
        return DenseAE(p.window, p.hidden, p.bottleneck, p.centre, p.depth)

    def split_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.require(windows, np.float32, ["C", "W"])
        return x, x

    def errors(self, inputs: np.ndarray, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        # float64 differences of the float32 values (exact), cast as the ufunc goes: no float64 copies of both
        if self.params.error == "newest":
            return np.abs(np.subtract(np.asarray(outputs)[:, -1], np.asarray(targets)[:, -1], dtype=np.float64))
        d = np.subtract(outputs, targets, dtype=np.float64)
        np.abs(d, out=d)
        if self.params.error == "mean":
            return d.mean(axis=1)
        return d.max(axis=1)
