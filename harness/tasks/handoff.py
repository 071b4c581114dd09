"""What a backend cell's scoring task hands its timing task: the last file's trained model, its calibration
windows and real windows of that file, with the runtime spec to prepare it for. Stored in the run folder as
bytes (a pickle), so a resumed run's timing task can take it from an earlier run's scoring."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.backends import RuntimeSpec, as_spec
from harness.detectors.pruning import PruningSpec


@dataclass
class ModelHandoff:
    spec: RuntimeSpec
    model: Any  # the trained torch.nn.Module
    calibration: np.ndarray
    windows: np.ndarray  # up to timing.batch windows of the file, as scored
    file: str

    def to_bytes(self) -> bytes:
        return pickle.dumps(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelHandoff":
        obj = pickle.loads(data)
        if isinstance(obj, dict):  # a run folder written before the handoff was typed
            return cls(as_spec(PruningSpec.split(obj["spec"])[0]), obj["model"], obj["calibration"], obj["windows"], obj["file"])
        return obj
