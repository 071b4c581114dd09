"""OpenVINO on CPU: FP32, BF16 and FP16 (the FP32 graph compiled with that INFERENCE_PRECISION_HINT), and INT8
(NNCF post-training quantization).

FP32 sets `INFERENCE_PRECISION_HINT=f32` (OpenVINO's default on an AVX-512 CPU is bf16). The model is read from
the FP32 ONNX bytes in memory (`Core.read_model(bytes)`).

INT8 is `nncf.quantize` on that model, calibrated on the calibration windows plus the windows x
`calibration_headroom` (base.DEFAULT_CALIBRATION_HEADROOM) fed as ONE batch (NNCF's `subset_size` counts dataset
items, i.e. batches, so it is 1 here and min/max span every sample), then compiled with the f32 hint so what
stays unquantized runs in f32. Only the MatMuls are quantized (`ignored_scope` types Multiply and Add), the
MatMuls that read the raw window stay FP32 unless `quantize_input_layers`, fast bias correction (the default) on.

Why these settings, with the measurements that chose them: docs/quantization.md, "Why these settings".
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from harness.backends.base import Compiled, StaticInt8, calibrated_settings, static_calibration
from harness.backends.onnx_export import artefact_path, initializer_bytes, onnx_fp32

if TYPE_CHECKING:
    import torch

DEVICE = "CPU"
NNCF_SETTINGS = {
    "preset": "PERFORMANCE",
    "ignored_types": ["Multiply", "Add"],
    "fast_bias_correction": True,
    "batches": 1,
}
_PASSTHROUGH = {"Slice", "StridedSlice", "Reshape", "Squeeze", "Unsqueeze", "Convert", "Gather", "Transpose"}

_core = None
_core_lock = threading.Lock()


def core() -> Any:
    """One OpenVINO Core per process."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            _core = ov.Core()
        return _core


HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}  # int8: what stays unquantized runs in f32


def compile_config(threads: int, precision: str = "fp32") -> dict[str, Any]:
    return {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        # Cells run side by side (and are timed so with `timing.exclusive: false`): pinning could put two
        # processes' threads on one core.
        "ENABLE_CPU_PINNING": False,
    }


class OvCompiled(Compiled):
    def __init__(self, compiled_model: Any, size_bytes: int, info: dict):
        super().__init__(size_bytes, info)
        import openvino as ov

        self._Tensor = ov.Tensor
        self.compiled_model = compiled_model
        self._request = compiled_model.create_infer_request()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        # set_input_tensor + infer + get_output_tensor: the cheapest call path (docs/quantization.md, "Why these settings")
        self._request.set_input_tensor(self._Tensor(batch, shared_memory=True))
        self._request.infer()
        return self._request.get_output_tensor().data.copy()


def input_matmuls(model: Any) -> list[str]:
    """Friendly names of the MatMuls whose activation is the raw model input (through slicing/reshaping only)."""
    names = []
    for op in model.get_ops():
        if op.get_type_name() != "MatMul":
            continue
        node, seen = op.input_value(0).get_node(), 0
        while node.get_type_name() in _PASSTHROUGH and seen < 64:
            node, seen = node.input_value(0).get_node(), seen + 1
        if node.get_type_name() == "Parameter":
            names.append(op.get_friendly_name())
    return names


def _nncf_quantize(ov_model: Any, calibration: np.ndarray, quantize_input_layers: bool) -> tuple[Any, dict[str, Any]]:
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)  # no per-call progress bars or INFO tables
    names = [] if quantize_input_layers else input_matmuls(ov_model)
    ignored = nncf.IgnoredScope(names=names, types=list(NNCF_SETTINGS["ignored_types"]), validate=False)
    dataset = nncf.Dataset([calibration])
    # NNCF draws rich progress bars on stdout and has no switch for them
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(
            ov_model,
            dataset,
            preset=getattr(nncf.QuantizationPreset, NNCF_SETTINGS["preset"]),
            subset_size=NNCF_SETTINGS["batches"],
            fast_bias_correction=NNCF_SETTINGS["fast_bias_correction"],
            ignored_scope=ignored,
        )
    return quantized, {"fp32_layers": len(names), "nncf_version": nncf.__version__}


def _save_ir(model: Any, xml: Path) -> None:
    """Save an IR atomically (.bin first, then .xml: a present .xml means a complete entry)."""
    import openvino as ov

    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{xml.stem}.", dir=xml.parent))
    try:
        ov.save_model(model, tmp / "model.xml", compress_to_fp16=False)
        os.replace(tmp / "model.bin", xml.with_suffix(".bin"))
        os.replace(tmp / "model.xml", xml)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class OpenVinoSpec(StaticInt8):
    """OpenVINO on CPU: fp32 (with the f32 precision hint), bf16, fp16, int8 (NNCF, calibrated)."""

    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "int8", "bf16", "fp16")
    backend: Literal["openvino"] = "openvino"

    def build(self, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path | None) -> "OvCompiled":
        assert cache_dir is not None
        return prepare_openvino(self, model, calibration, cache_dir)


def prepare_openvino(spec: OpenVinoSpec, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path) -> OvCompiled:
    import openvino as ov

    c = core()
    info: dict[str, Any] = {
        "backend": "openvino",
        "precision": spec.precision,
        "threads": spec.threads,
        "quantization": "nncf-static" if spec.precision == "int8" else None,
        "provider": DEVICE,
    }
    if spec.precision != "int8":  # fp32, bf16, fp16: the FP32 graph, compiled with that precision hint
        src = onnx_fp32(model, calibration, cache_dir)
        ov_model = c.read_model(src.data)
        size, artefact = len(src.data), src.path
        info.update(cache="hit" if src.source == "cache" else "miss", export=src.source, artefact_format="onnx",
                    weights_bytes=initializer_bytes(src.proto()))
    else:
        settings = {**NNCF_SETTINGS, **calibrated_settings(spec, calibration)}
        artefact = artefact_path(model, calibration.shape[1], cache_dir, "ov-int8", settings,
                                 (ov.__version__, importlib.metadata.version("nncf")), ".xml")
        info["quantizer"] = settings
        if artefact.is_file() and artefact.with_suffix(".bin").is_file():
            ov_model = c.read_model(artefact)
            info.update(cache="hit", export="cache")
        else:
            src = onnx_fp32(model, calibration, cache_dir)
            ov_model, qinfo = _nncf_quantize(c.read_model(src.data), static_calibration(calibration, spec.calibration_headroom),
                                             spec.quantize_input_layers)
            info.update(qinfo, cache="miss", export=src.source)
            _save_ir(ov_model, artefact)
        info["fake_quantize_nodes"] = sum(1 for op in ov_model.get_ops() if op.get_type_name() == "FakeQuantize")
        size = artefact.stat().st_size + artefact.with_suffix(".bin").stat().st_size
        info.update(artefact_format="openvino-ir", weights_bytes=artefact.with_suffix(".bin").stat().st_size)
    compiled = c.compile_model(ov_model, DEVICE, compile_config(spec.threads, spec.precision))
    info.update(
        artefact=str(artefact),
        threads_effective=int(compiled.get_property("INFERENCE_NUM_THREADS")),
        inference_precision=compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
        performance_hint=str(compiled.get_property("PERFORMANCE_HINT")),
        num_streams=int(compiled.get_property("NUM_STREAMS")),
        cpu_pinning=bool(compiled.get_property("ENABLE_CPU_PINNING")),
        openvino_version=ov.__version__,
        execution_devices=list(compiled.get_property("EXECUTION_DEVICES")),
    )
    return OvCompiled(compiled, size, info)
