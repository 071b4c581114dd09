"""The interface every inference backend shares: a `BackendSpec` says where and how a detector's model runs,
`prepare` turns a trained `torch.nn.Module` into a `Compiled` model for it, and `Compiled.infer` scores a batch
of windows.

    compiled = prepare(BackendSpec(backend="onnxruntime", precision="int8"), model, calibration)
    scores = compiled.infer(windows)        # float32 (batch, window) -> float32 (batch, k)
    compiled.info                           # everything needed to reproduce the row

Heavy modules (torch, onnxruntime, openvino, nncf) are imported inside the functions that need them, so that
importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.cache import cache_root

if TYPE_CHECKING:
    import torch

BACKENDS = ("torch", "onnxruntime", "openvino")

# ONNX Runtime INT8 when `quantization` is not given. Static is not better here (benchmarks/bench_backends.py;
# AMD EPYC, 1 thread, window 32, hidden 32): dynamic vs static latency within run-to-run noise (LSTM batch 256
# 1.61-1.66 vs 1.66-1.67 ms, batch 1 220 vs 215-253 us), errors of the same size (worst relative error over 5
# seeds x untrained/trained 0.044 vs 0.041; on windows with spikes 0.032 vs 0.059), and static costs a
# calibration pass (per-file prepare 0.08-0.11 vs 0.27-0.38 s for the LSTM).
# Dynamic ranges come from each batch, so nothing is clipped however far a window strays from calibration.
DEFAULT_ORT_QUANTIZATION = "dynamic"

# Static INT8 (onnxruntime static, openvino/NNCF) clips activations at the calibrated range. 256 calibration
# windows leave later windows of the same series outside it (trained autoencoder: relative error up to 0.24 on
# held-out windows, 0.42 on windows with spikes). Calibrating on the windows plus the windows x2 gives the
# ranges room: worst cases 0.10 / 0.06 (onnxruntime static), 0.04 / 0.03 (NNCF), for a little resolution.
DEFAULT_CALIBRATION_HEADROOM = 2.0

MAX_CALIBRATION = 256  # samples used for static quantization / NNCF (more are ignored)
VERIFY_SAMPLES = 64  # calibration samples compared with torch after every prepare

# FP32 backends must reproduce torch: max |y - y_torch| <= FP32_ATOL + FP32_RTOL * max |y_torch|.
# Measured: ~1e-7 (onnxruntime and openvino with the f32 hint); bf16 would give ~2e-3.
FP32_ATOL = 1e-5
FP32_RTOL = 1e-5

# What each runtime runs on a CPU. bf16 and fp16 run the FP32 model with reduced-precision arithmetic: torch casts
# the model (bf16), onnxruntime converts the graph to fp16 keeping fp32 inputs and outputs, openvino compiles with
# INFERENCE_PRECISION_HINT bf16 / f16.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8", "fp16"),
    "openvino": ("fp32", "int8", "bf16", "fp16"),
}

FORMAT_VERSION = "1"  # bump to invalidate every cached artefact


class BackendSpec(BaseModel):
    """Where a model runs. Compatible with a scenario's backend entry: `BackendSpec.model_validate(entry.model_dump())`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["torch", "onnxruntime", "openvino"] = "torch"
    precision: Literal["fp32", "int8", "bf16", "fp16"] = Field(
        "fp32", description="int8: onnxruntime, openvino; bf16: torch, openvino; fp16: onnxruntime, openvino (PRECISIONS)"
    )
    threads: int = Field(1, ge=1, le=64, description="intra-op threads of the backend")
    quantization: Literal["dynamic", "static"] | None = Field(
        None, description=f"onnxruntime int8 only; default {DEFAULT_ORT_QUANTIZATION!r}"
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime's graph optimization level"
    )
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
    verify: bool = Field(True, description="after prepare, compare with torch on calibration samples (fp32: must match)")
    prune: Literal["magnitude", "structured"] | None = Field(
        None, description="learned detectors prune each trained model before it is prepared (harness.detectors.pruning): "
        "magnitude (zeroed weights, shapes kept) or structured (hidden units removed)",
    )
    sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="with prune: the share of weights (magnitude) or hidden units (structured) removed")
    prune_epochs: int = Field(2, ge=0, le=100, description="with prune: fine-tuning passes over the probationary data after pruning")

    @model_validator(mode="before")
    @classmethod
    def _default_quantization(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("quantization") is None:
            if data.get("backend") == "onnxruntime" and data.get("precision") == "int8":
                data = {**data, "quantization": DEFAULT_ORT_QUANTIZATION}
        return data

    @model_validator(mode="after")
    def _combination(self) -> "BackendSpec":
        if self.precision not in PRECISIONS[self.backend]:
            why = " (torch.ao dynamic quantization is slower than torch fp32 on this CPU)" if self.precision == "int8" else ""
            offered = " or ".join(b for b, ps in PRECISIONS.items() if self.precision in ps)
            raise ValueError(f"{self.backend} {self.precision} is not offered{why}; use backend {offered} for {self.precision}")
        if self.quantization is not None and not (self.backend == "onnxruntime" and self.precision == "int8"):
            raise ValueError("quantization ('dynamic' or 'static') applies to onnxruntime int8 only")
        if (self.prune is None) != (self.sparsity == 0.0) or (self.prune is None and self.prune_epochs != 2):
            raise ValueError("prune (magnitude or structured) and a sparsity above 0 go together (prune_epochs with them)")
        if self.graph_optimization != "all" and self.backend != "onnxruntime":
            raise ValueError("graph_optimization applies to onnxruntime only")
        calibrated = self.precision == "int8" and (self.backend == "openvino" or self.quantization == "static")
        if not calibrated and (self.quantize_input_layers or self.calibration_headroom != DEFAULT_CALIBRATION_HEADROOM):
            raise ValueError(
                "quantize_input_layers and calibration_headroom apply to static int8 only "
                "(onnxruntime with quantization 'static', or openvino int8)"
            )
        return self

    @property
    def token(self) -> str:
        """A cell-id part: backend-precision[-quantization], then every other setting that is not the default
        (`.threads-2`, `.graph-optimization-basic`...), so two entries that differ anywhere get distinct ids."""
        base = "-".join(p for p in (self.backend, self.precision, self.quantization) if p)
        extras = self.model_dump(exclude_defaults=True, exclude={"backend", "precision", "quantization"})
        return ".".join([base, *(f"{k}-{str(v).lower()}".replace("_", "-") for k, v in extras.items())])


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


def as_spec(spec: Any) -> BackendSpec:
    """A BackendSpec from a BackendSpec, a dict, or any pydantic model with the same fields (a scenario entry)."""
    if isinstance(spec, BackendSpec):
        return spec
    if isinstance(spec, BaseModel):
        spec = spec.model_dump(exclude_none=True)
    return BackendSpec.model_validate(spec)


def static_calibration(calibration: np.ndarray, headroom: float) -> np.ndarray:
    """The batch static quantizers calibrate on: the windows, plus the windows scaled by `headroom` if > 1."""
    if headroom <= 1.0:
        return calibration
    return np.concatenate([calibration, calibration * np.float32(headroom)])


def calibrated_settings(spec: BackendSpec, calibration: np.ndarray) -> dict[str, Any]:
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


def prepare(spec: Any, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: str | Path | None = None) -> Compiled:
    """Export / quantize / compile `model` for `spec`'s backend.

    `calibration`: up to 256 float32 windows (samples, window), representative of what the model will score;
    used as the export example, for static quantization / NNCF, and to verify the result against torch.
    `cache_dir`: where exported and quantized artefacts are kept, keyed by a hash of weights + settings
    (default `$HARNESS_CACHE/models` or `~/.cache/harness/models`); a second prepare of the same weights loads them.
    """
    spec = as_spec(spec)
    calibration = as_calibration(calibration)
    model.eval()
    if spec.backend == "torch":
        from harness.backends.torch_backend import prepare_torch as impl
    elif spec.backend == "onnxruntime":
        from harness.backends.onnxruntime_backend import prepare_onnxruntime as impl
    elif spec.backend == "openvino":
        from harness.backends.openvino_backend import prepare_openvino as impl
    else:  # pragma: no cover - the spec's Literal rules it out
        raise ValueError(f"unknown backend {spec.backend!r}")
    cache = resolve_cache_dir(cache_dir) if spec.backend != "torch" else None
    t0 = time.perf_counter()
    compiled = impl(spec, model, calibration, cache)
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


def _verify(compiled: Compiled, model: "torch.nn.Module", calibration: np.ndarray, spec: BackendSpec) -> None:
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
