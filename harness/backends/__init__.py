"""Inference backends for the learned detectors: torch FP32 (the reference), ONNX Runtime FP32/INT8 and
OpenVINO FP32/INT8, behind one interface (see `base`):

    from harness.backends import BackendSpec, prepare
    compiled = prepare(BackendSpec(backend="openvino", precision="int8"), model, calibration, cache_dir)
    compiled.infer(windows); compiled.size_bytes; compiled.info

Importing this package imports none of torch, onnxruntime, openvino or nncf.
"""

from harness.backends.base import (
    BACKENDS,
    DEFAULT_ORT_QUANTIZATION,
    BackendSpec,
    Compiled,
    output_errors,
    prepare,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_ORT_QUANTIZATION",
    "BackendSpec",
    "Compiled",
    "output_errors",
    "prepare",
]
