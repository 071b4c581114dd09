"""Inference backends for the learned detectors: torch (the reference), ONNX Runtime and OpenVINO, behind one
interface (see `base`). Each runtime is one module with its spec (a `base.RuntimeSpec` subclass) and its
`prepare`; this registry gathers them, and `BackendSpec` validates an entry by the class its `backend` names.
Adding a runtime is a module and a line in `RUNTIMES`.

    from harness.backends import as_spec, prepare
    compiled = prepare({"backend": "openvino", "precision": "int8"}, model, calibration, cache_dir)
    compiled.infer(windows); compiled.size_bytes; compiled.info

Importing this package imports none of torch, onnxruntime, openvino or nncf.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PlainSerializer, PlainValidator, SerializationInfo, TypeAdapter

from harness.backends.base import DEFAULT_ORT_QUANTIZATION, Compiled, RuntimeSpec, output_errors
from harness.backends.base import prepare as _prepare
from harness.backends.onnxruntime_backend import OnnxRuntimeSpec
from harness.backends.openvino_backend import OpenVinoSpec
from harness.backends.torch_backend import TorchSpec
from harness.errors import kind_of

if TYPE_CHECKING:
    import torch

RUNTIMES: dict[str, type[RuntimeSpec]] = {"torch": TorchSpec, "onnxruntime": OnnxRuntimeSpec, "openvino": OpenVinoSpec}
BACKENDS = tuple(RUNTIMES)
_FOREIGN = {  # per runtime: the other runtimes' settings it lacks, with their defaults
    name: {k: f.default for other in RUNTIMES.values() for k, f in other.model_fields.items() if k not in cls.model_fields}
    for name, cls in RUNTIMES.items()
}
PRECISIONS = {name: spec.PRECISIONS for name, spec in RUNTIMES.items()}  # what each runtime runs on a CPU


class _Runtime(BaseModel):
    """Which runtime an entry names (the rest is its runtime's to check)."""

    model_config = ConfigDict(extra="allow")
    backend: Literal[tuple(RUNTIMES)] = "torch"  # type: ignore[valid-type]


def _own(value: dict[str, Any]) -> dict[str, Any]:
    """The entry without another runtime's settings left at their defaults, which mean nothing here (a spec
    stored before each runtime had its own class dumped every runtime's settings)."""
    foreign = _FOREIGN[value.get("backend", "torch")]
    return {k: v for k, v in value.items() if not (k in foreign and v == foreign[k])}


def _offered(value: dict[str, Any]) -> None:
    """An entry's runtime must offer its precision and have its settings: one line saying which runtime does."""
    name = value.get("backend", "torch")
    precision = value.get("precision", "fp32")
    if precision not in PRECISIONS[name] and precision in {p for ps in PRECISIONS.values() for p in ps}:
        why = " (torch.ao dynamic quantization is slower than torch fp32 on this CPU)" if precision == "int8" else ""
        offered = " or ".join(b for b, ps in PRECISIONS.items() if precision in ps)
        raise ValueError(f"{name} {precision} is not offered{why}; use backend {offered} for {precision}")
    for key in value:
        owners = [b for b, spec in RUNTIMES.items() if key in spec.model_fields]
        if owners and name not in owners:
            scope = "onnxruntime int8" if key == "quantization" else " and ".join(owners)
            raise ValueError(f"{key} applies to {scope} only")


def _validate(value: Any) -> RuntimeSpec:
    """The spec of the runtime `value` names (by `backend`, torch when left out); errors name the entry's keys."""
    if isinstance(value, RuntimeSpec):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if not isinstance(value, dict):
        raise ValueError(f"expected a backend entry (backend, precision...), got {kind_of(value)}")
    name = _Runtime.model_validate(value).backend
    value = _own(value)
    _offered(value)
    return RUNTIMES[name].model_validate(value)


def _dump(spec: RuntimeSpec, info: SerializationInfo) -> dict[str, Any]:
    return spec.model_dump(mode=info.mode)


# A runtime's spec, whichever runtime: validated by the class `backend` names, dumped with all of its fields.
BackendSpec = Annotated[RuntimeSpec, PlainValidator(_validate), PlainSerializer(_dump)]
_ADAPTER: TypeAdapter[RuntimeSpec] = TypeAdapter(BackendSpec)


def as_spec(spec: Any) -> RuntimeSpec:
    """A runtime's spec from a spec, a dict, or a pydantic model with the same fields."""
    return _ADAPTER.validate_python(spec)


def prepare(spec: Any, model: "torch.nn.Module", calibration: np.ndarray, cache_dir: str | Path | None = None) -> Compiled:
    """Export / quantize / compile `model` for `spec`'s runtime (harness.backends.base.prepare).

    `calibration`: up to 256 float32 windows (samples, window), representative of what the model will score;
    used as the export example, for static quantization / NNCF, and to verify the result against torch.
    `cache_dir`: where exported and quantized artefacts are kept, keyed by a hash of weights + settings
    (default `$HARNESS_CACHE/models` or `~/.cache/harness/models`); a second prepare of the same weights loads them.
    """
    return _prepare(as_spec(spec), model, calibration, cache_dir)


__all__ = [
    "BACKENDS",
    "DEFAULT_ORT_QUANTIZATION",
    "PRECISIONS",
    "RUNTIMES",
    "BackendSpec",
    "Compiled",
    "RuntimeSpec",
    "as_spec",
    "output_errors",
    "prepare",
]
