"""The interface every inference backend shares: a `RuntimeSpec` (one subclass per runtime) says where and how a
detector's model runs, `prepare` turns a trained `torch.nn.Module` into a `Compiled` model for it, and
`Compiled.infer` scores a batch of windows.

    compiled = prepare(as_spec({"backend": "onnxruntime", "precision": "int8"}), model, calibration)
    scores = compiled.infer(windows)        # float32 (batch, window) -> float32 (batch, k)
    compiled.info                           # everything needed to reproduce the row

Heavy modules (torch, onnxruntime, openvino, nncf) are imported inside the functions that need them, so that
importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.cache import cache_root

if TYPE_CHECKING:
    import torch

# ONNX Runtime INT8 when `quantization` is not given: dynamic (docs/quantization.md, "why these settings").
DEFAULT_ORT_QUANTIZATION = "dynamic"

# Static INT8 calibrates on the windows plus the windows x this factor, so activation ranges get room beyond what
# the calibration windows reach (docs/quantization.md).
DEFAULT_CALIBRATION_HEADROOM = 2.0

MAX_CALIBRATION = 256  # samples used for static quantization / NNCF (more are ignored)
VERIFY_SAMPLES = 64  # calibration samples compared with torch after every prepare

# FP32 backends must reproduce torch: max |y - y_torch| <= FP32_ATOL + FP32_RTOL * max |y_torch|.
FP32_ATOL = 1e-5
FP32_RTOL = 1e-5

FORMAT_VERSION = "1"  # bump to invalidate every cached artefact

# The order of a spec's settings in its token (and so in cell ids), whichever runtime declares them.
_TOKEN_ORDER = ("threads", "quantization", "graph_optimization", "quantize_input_layers", "calibration_headroom", "verify")


class RuntimeSpec(BaseModel):
    """Where and how a model runs: the settings every runtime has. Each runtime subclasses it with its own
    precisions (`PRECISIONS`) and settings, and builds a `Compiled` in `build`; harness.backends gathers them
    into `BackendSpec`, which validates an entry with the class its `backend` names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32",)
    backend: str
    precision: Literal["fp32", "int8", "bf16", "fp16"] = Field(
        "fp32", description="int8: onnxruntime, openvino; bf16: torch, openvino; fp16: onnxruntime, openvino"
    )
    threads: int = Field(1, ge=1, le=64, description="intra-op threads of the backend")
    verify: bool = Field(True, description="after prepare, compare with torch on calibration samples (fp32: must match)")

    @property
    def token(self) -> str:
        """A cell-id part: backend-precision[-quantization], then every other setting that is not the default
        (`.threads-2`, `.graph-optimization-basic`...), so two entries that differ anywhere get distinct ids."""
        quantization = getattr(self, "quantization", None)
        base = "-".join(p for p in (self.backend, self.precision, quantization) if p)
        extras = self.model_dump(exclude_defaults=True, exclude={"backend", "precision", "quantization"})
        ordered = sorted(extras.items(), key=lambda kv: _TOKEN_ORDER.index(kv[0]) if kv[0] in _TOKEN_ORDER else len(_TOKEN_ORDER))
        return ".".join([base, *(f"{k}-{str(v).lower()}".replace("_", "-") for k, v in ordered)])

    @property
    def cached(self) -> bool:
        """Whether its artefacts are exported to the model cache (every runtime but torch)."""
        return True

    def build(self, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path | None) -> "Compiled":
        raise NotImplementedError


class StaticInt8(RuntimeSpec):
    """The settings of a runtime whose INT8 is calibrated (onnxruntime static, openvino/NNCF)."""

    quantize_input_layers: bool = Field(
        False,
        description="static int8 (onnxruntime static, openvino/NNCF): also quantize the Linear layers that read "
        "the raw window. Off by default: a static input range comes from calibration and clips anomalies.",
    )
    calibration_headroom: float = Field(
        DEFAULT_CALIBRATION_HEADROOM, ge=1.0, le=4.0,
        description="static int8: calibrate on the windows and on the windows scaled by this factor, so activation "
        "ranges get room beyond what the calibration windows reach (1.0: the windows only)",
    )

    @property
    def calibrated(self) -> bool:
        return self.precision == "int8"

    @model_validator(mode="after")
    def _static_only(self) -> "StaticInt8":
        if not self.calibrated and (self.quantize_input_layers or self.calibration_headroom != DEFAULT_CALIBRATION_HEADROOM):
            raise ValueError(
                "quantize_input_layers and calibration_headroom apply to static int8 only "
                "(onnxruntime with quantization 'static', or openvino int8)"
            )
        return self


class Compiled:
    """A model ready to score windows on one backend.

    `infer(batch)`: float32 (batch, window) in, float32 (batch, k) out, any batch >= 1. Not thread-safe: use one
    `Compiled` per thread. `size_bytes`: the size of the artefact the backend loads (ONNX file, OpenVINO IR, or
    torch state_dict). `info`: backend, precision, threads, quantization settings, versions, cache keys... as
    plain JSON values.
    """

    def __init__(self, size_bytes: int, info: dict[str, Any]):
        self.size_bytes = int(size_bytes)
        self.info = info

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.require(batch, np.float32, ["C", "W"])  # OpenVINO refuses read-only arrays (as Ray hands them out)
        if batch.ndim != 2 or batch.shape[0] < 1:
            raise ValueError(f"expected a float32 batch of windows shaped (batch >= 1, window), got {batch.shape}")
        return np.asarray(self._run(batch), dtype=np.float32)

    __call__ = infer

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.info.get('backend')}/{self.info.get('precision')} {self.size_bytes} B>"


def static_calibration(calibration: np.ndarray, headroom: float) -> np.ndarray:
    """The batch static quantizers calibrate on: the windows, plus the windows scaled by `headroom` if > 1."""
    if headroom <= 1.0:
        return calibration
    return np.concatenate([calibration, calibration * np.float32(headroom)])


def calibrated_settings(spec: StaticInt8, calibration: np.ndarray) -> dict[str, Any]:
    """What a static INT8 artefact depends on besides the quantizer itself (part of its cache key and info)."""
    return {
        "quantize_input_layers": spec.quantize_input_layers,
        "calibration_headroom": spec.calibration_headroom,
        "calibration_sha": array_hash(calibration),
        "calibration_samples": len(calibration),
    }


def as_calibration(calibration: np.ndarray) -> np.ndarray:
    x = np.require(calibration, np.float32, ["C", "W"])
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"calibration must be float32 windows shaped (samples >= 1, window), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("calibration contains non-finite values")
    return x[:MAX_CALIBRATION]


def default_cache_dir() -> Path:
    return cache_root() / "models"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def array_hash(x: np.ndarray) -> str:
    x = np.ascontiguousarray(x)
    return sha256(str(x.dtype), repr(x.shape), x.tobytes())


def versions() -> dict[str, str]:
    """Versions of the inference stack that are already imported (importing none)."""
    import sys

    out = {}
    for name in ("numpy", "torch", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", "?"))
    return out


def prepare(spec: RuntimeSpec, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: str | Path | None = None) -> Compiled:
    """Export / quantize / compile `model` for `spec`'s runtime, with what every runtime records, and verified
    against torch (harness.backends.prepare takes any spec-like value)."""
    calibration = as_calibration(calibration)
    model.eval()
    cache = resolve_cache_dir(cache_dir) if spec.cached else None
    t0 = time.perf_counter()
    compiled = spec.build(model, calibration, cache)
    compiled.info["prepare_s"] = round(time.perf_counter() - t0, 6)
    compiled.info["size_bytes"] = compiled.size_bytes
    compiled.info["window"] = int(calibration.shape[1])
    compiled.info["calibration_samples"] = int(len(calibration))
    compiled.info["spec"] = spec.model_dump()
    compiled.info["versions"] = versions()
    if spec.verify:
        _verify(compiled, model, calibration, spec)
    return compiled


def torch_reference(model: "torch.nn.Module", batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()


def output_errors(y: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """max |y - ref| and that divided by max |ref| (the error relative to the output's magnitude)."""
    err = float(np.abs(y.astype(np.float64) - ref).max()) if y.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return {"max_abs_err": err, "rel_err": err / scale if scale > 0 else err}


def _verify(compiled: Compiled, model: "torch.nn.Module", calibration: np.ndarray, spec: RuntimeSpec) -> None:
    t0 = time.perf_counter()
    x = calibration[:VERIFY_SAMPLES]
    ref = torch_reference(model, x)
    y = compiled.infer(x)
    if y.shape != ref.shape:
        raise RuntimeError(f"{spec.token}: output shape {y.shape} differs from torch's {ref.shape}")
    errs = output_errors(y, ref)
    compiled.info["check"] = {"samples": len(x), **errs, "seconds": round(time.perf_counter() - t0, 6)}
    if spec.precision == "fp32":
        bound = FP32_ATOL + FP32_RTOL * float(np.abs(ref).max())
        if not errs["max_abs_err"] <= bound:
            raise RuntimeError(
                f"{spec.token}: output differs from torch by {errs['max_abs_err']:.3g} (allowed {bound:.3g}) "
                "on calibration samples; the exported graph does not reproduce the model"
            )
