"""ONNX Runtime on CPU: FP32, FP16, INT8 dynamic, INT8 static (QDQ).

FP16 converts the FP32 graph's weights and arithmetic to float16 (`onnxruntime.transformers.float16`), keeping
float32 inputs and outputs; the CPU provider runs what it has no fp16 kernel for through inserted casts.

- dynamic: `quantize_dynamic` with QInt8 weights, per-tensor; no calibration: ranges come from each batch, so
  out-of-range windows (anomalies) are not clipped.
- static: QDQ, per-channel symmetric QInt8 weights, asymmetric QUInt8 activations, only the inputs of
  Gemm/MatMul quantized (their outputs stay float), no other op types. MinMax calibration over the calibration
  windows plus the windows x `calibration_headroom` (base.DEFAULT_CALIBRATION_HEADROOM), one batch. The
  Gemm/MatMul layers reading the raw window stay FP32 unless `quantize_input_layers`.

Why these settings, with the measurements that chose them: docs/quantization.md, "Why these settings".
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from harness.atomic import public_mode
from harness.backends.base import DEFAULT_ORT_QUANTIZATION, Compiled, StaticInt8, calibrated_settings, static_calibration
from harness.backends.onnx_export import (
    OnnxModel,
    artefact_path,
    initializer_bytes,
    onnx_fp32,
    quantizable_input_layers,
)

if TYPE_CHECKING:
    import torch

PROVIDER = "CPUExecutionProvider"
DYNAMIC = {"weight_type": "QInt8", "per_channel": False, "reduce_range": False}
STATIC = {
    "quant_format": "QDQ",
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "calibrate_method": "MinMax",
    "op_types_to_quantize": ["Gemm", "MatMul"],
    "extra_options": {
        "ActivationSymmetric": False,
        "WeightSymmetric": True,
        "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
    },
}
FP16 = {"keep_io_types": True}
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OrtCompiled(Compiled):
    def __init__(self, session: Any, input_name: str, output_name: str, size_bytes: int, info: dict):
        super().__init__(size_bytes, info)
        self.session = session
        self._input = input_name
        self._outputs = [output_name]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(self._outputs, {self._input: batch})[0]


def session_options(spec: "OnnxRuntimeSpec") -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = spec.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[spec.graph_optimization])
    so.log_severity_level = 3
    return so


@contextlib.contextmanager
def _quiet_quantizer():
    """onnxruntime.quantization logs 'Please consider to run pre-processing' through the root logger on every
    call (pre-processing is not used: docs/quantization.md, "Why these settings"); drop that one message."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing" not in record.getMessage()

    f = _Drop()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def _write_converted(path: Path, build) -> None:
    """Write a converted model atomically: build into a temporary file beside `path`, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with _quiet_quantizer():
            build(tmp)
        os.chmod(tmp, public_mode())  # mkstemp's 0600: the cache is as readable as what open() writes
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# The quantizers get the fp32 model as a proto, never as the cache's path: given a path, ONNX Runtime writes its
# shape-inferred copy beside it (<name>-inferred.onnx) and deletes it after, so two cells quantizing the same
# model at once (a static and a dynamic INT8 row) deleted each other's copy. A proto goes through a private
# temporary folder.
def _quantize_dynamic(src: OnnxModel, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _write_converted(dst, lambda out: quantize_dynamic(
        src.proto(), out, weight_type=getattr(QuantType, DYNAMIC["weight_type"]),
        per_channel=DYNAMIC["per_channel"], reduce_range=DYNAMIC["reduce_range"],
    ))


def _convert_fp16(src: OnnxModel, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _write_converted(dst, lambda out: onnx.save(convert_float_to_float16(src.proto(), **FP16), out))


def _quantize_static(src: OnnxModel, dst: Path, calibration: np.ndarray, exclude: list[str]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class _Reader(CalibrationDataReader):
        """The whole calibration set as one batch: MinMax over all samples in one pass."""

        def __init__(self) -> None:
            self._batches = iter([{src.input_name: calibration}])

        def get_next(self):
            return next(self._batches, None)

    _write_converted(dst, lambda out: quantize_static(
        src.proto(), out, _Reader(),
        quant_format=getattr(QuantFormat, STATIC["quant_format"]),
        activation_type=getattr(QuantType, STATIC["activation_type"]),
        weight_type=getattr(QuantType, STATIC["weight_type"]),
        per_channel=STATIC["per_channel"],
        reduce_range=STATIC["reduce_range"],
        calibrate_method=getattr(CalibrationMethod, STATIC["calibrate_method"]),
        op_types_to_quantize=STATIC["op_types_to_quantize"],
        nodes_to_exclude=exclude or None,
        extra_options=dict(STATIC["extra_options"]),
    ))


class OnnxRuntimeSpec(StaticInt8):
    """ONNX Runtime's CPU provider: fp32, fp16, int8 dynamic or static (QDQ)."""

    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "int8", "fp16")
    backend: Literal["onnxruntime"] = "onnxruntime"
    quantization: Literal["dynamic", "static"] | None = Field(
        None, description=f"int8 only; default {DEFAULT_ORT_QUANTIZATION!r}"
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime's graph optimization level"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_quantization(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("quantization") is None and data.get("precision") == "int8":
            data = {**data, "quantization": DEFAULT_ORT_QUANTIZATION}
        return data

    @model_validator(mode="after")
    def _int8_only(self) -> "OnnxRuntimeSpec":
        if self.quantization is not None and self.precision != "int8":
            raise ValueError("quantization ('dynamic' or 'static') applies to onnxruntime int8 only")
        return self

    @property
    def calibrated(self) -> bool:
        return self.precision == "int8" and self.quantization == "static"

    def build(self, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path | None) -> "OrtCompiled":
        assert cache_dir is not None
        return prepare_onnxruntime(self, model, calibration, cache_dir)


def prepare_onnxruntime(spec: OnnxRuntimeSpec, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path) -> OrtCompiled:
    """The model on ONNX Runtime at `spec`'s precision: its ONNX artefact (cached), then a session; `info` says
    what was run and how (the cell's backend_info)."""
    import onnx
    import onnxruntime as ort

    info: dict[str, Any] = {
        "backend": "onnxruntime",
        "precision": spec.precision,
        "threads": spec.threads,
        "quantization": spec.quantization,
        "provider": PROVIDER,
        "graph_optimization": spec.graph_optimization,
    }
    data, path, cache = _artefact(spec, model, calibration, cache_dir, info)
    proto = onnx.load_from_string(data)
    if spec.precision == "int8":
        info["quantized_ops"] = {k: v for k, v in Counter(n.op_type for n in proto.graph.node).items() if k in (
            "DynamicQuantizeLinear", "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "QGemm", "QLinearMatMul")}
    info["weights_bytes"] = initializer_bytes(proto)
    session = ort.InferenceSession(data, session_options(spec), providers=[PROVIDER])
    opts = session.get_session_options()
    info.update(
        cache=cache,
        artefact=str(path),
        threads_effective=opts.intra_op_num_threads,
        inter_op_threads=opts.inter_op_num_threads,
        providers=session.get_providers(),
        graph_optimization_level=str(opts.graph_optimization_level).split(".")[-1],
    )
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    return OrtCompiled(session, inp, out, len(data), info)


def _artefact(spec: "OnnxRuntimeSpec", model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path,
              info: dict[str, Any]) -> tuple[bytes, Path, str]:
    """The ONNX model to run (bytes, its path, cache "hit" or "miss"): the FP32 export, or its FP16 / INT8
    conversion, cached under the weights and the conversion's settings (+ the calibration, for static).
    Records how it was made in `info` (export, quantizer)."""
    import onnxruntime as ort

    if spec.precision == "fp32":
        src = onnx_fp32(model, calibration, cache_dir)
        info["export"] = src.source
        return src.data, src.path, "hit" if src.source == "cache" else "miss"
    if spec.precision == "fp16":
        settings: dict[str, Any] = dict(FP16)
    elif spec.quantization == "dynamic":
        settings = dict(DYNAMIC)
    else:
        settings = {**STATIC, **calibrated_settings(spec, calibration)}
    kind = "ort-fp16" if spec.precision == "fp16" else f"ort-int8-{spec.quantization}"
    path = artefact_path(model, calibration.shape[1], cache_dir, kind, settings, (ort.__version__,), ".onnx")
    info["quantizer"] = settings
    if path.is_file():
        info["export"] = "cache"
        return path.read_bytes(), path, "hit"
    src = onnx_fp32(model, calibration, cache_dir)
    info["export"] = src.source
    if spec.precision == "fp16":
        _convert_fp16(src, path)
    elif spec.quantization == "dynamic":
        _quantize_dynamic(src, path)
    else:
        exclude = [] if spec.quantize_input_layers else quantizable_input_layers(src.proto(), src.input_name)
        info["fp32_layers"] = len(exclude)
        _quantize_static(src, path, static_calibration(calibration, spec.calibration_headroom), exclude)
    return path.read_bytes(), path, "miss"
