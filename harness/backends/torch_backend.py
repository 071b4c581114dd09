"""Torch FP32: the reference every other backend is compared with; and torch BF16 (a bf16 copy of the model, fp32
in and out). No INT8: why, docs/quantization.md, "Why these settings"."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from harness.backends.base import Compiled, RuntimeSpec

if TYPE_CHECKING:
    import torch


class TorchCompiled(Compiled):
    def __init__(self, model: "torch.nn.Module", threads: int, size_bytes: int, info: dict, dtype: "torch.dtype | None" = None):
        super().__init__(size_bytes, info)
        self._model = model
        self._threads = threads
        self._dtype = dtype  # the model's, when not float32

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if torch.get_num_threads() != self._threads:  # process-wide: another backend in this process may change it
            torch.set_num_threads(self._threads)
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            return self._model(x if self._dtype is None else x.to(self._dtype)).float().numpy()


class TorchSpec(RuntimeSpec):
    """Torch eager on CPU: fp32 (the reference) or a bf16 copy of the model."""

    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "bf16")
    backend: Literal["torch"] = "torch"

    @property
    def cached(self) -> bool:
        return False

    def build(self, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path | None) -> "TorchCompiled":
        return prepare_torch(self, model, calibration)


def prepare_torch(spec: TorchSpec, model: "torch.nn.Module", calibration: np.ndarray, cache_dir=None) -> TorchCompiled:
    import torch

    import copy

    dtype = {"fp32": None, "bf16": torch.bfloat16}[spec.precision]
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
    torch.set_num_threads(spec.threads)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    info = {
        "backend": "torch",
        "precision": spec.precision,
        "threads": spec.threads,
        "threads_effective": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "quantization": None,
        "provider": "torch-eager-cpu",
        "mode": "inference_mode",
        "artefact": "torch state_dict",
        "weights_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
    }
    return TorchCompiled(model, spec.threads, len(buf.getvalue()), info, dtype)
