"""ONNX export: one dynamo export per architecture, then a weight swap per trained model.

`torch.onnx.export(..., dynamo=True)` costs seconds (docs/quantization.md, "Why these settings"), and the corpus
trains one model per file. So the first model of an architecture is
exported as a *template*; every later model with the same architecture gets its ONNX graph by copying the
template and replacing the initializers that hold its parameters.

The binding of parameters to initializers is found once per template: by name (the dynamo exporter names a
Linear layer's initializers after the parameters, `head.weight`, `head.bias`), else by value (an initializer
equal to the parameter, or to its transpose). Every parameter must be bound, or export fails loudly. The
binding is then proven numerically: weights perturbed at random are swapped in and ONNX Runtime must reproduce
torch with those weights; an initializer the exporter derived from a parameter (folded, scaled...) and that
the binding missed shows up there.

Artefacts on disk, under `cache_dir` (see `base.resolve_cache_dir`):
- `templates/<arch>.onnx` + `.json`: a template and its binding, so another process skips the dynamo export;
- `onnx/<arch>-<weights>.onnx`: the FP32 model of one set of weights; a second prepare of the same weights
  reads it and swaps nothing.

`arch` hashes the model's classes (their source), repr, scalar attributes, tensor names/shapes/dtypes, the
window length and the torch/onnxscript versions; `weights` hashes every parameter and buffer value.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import marshal
import threading
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.atomic import write_bytes, write_text
from harness.backends.base import FORMAT_VERSION, array_hash, sha256

if TYPE_CHECKING:
    import onnx
    import torch

EXPORT_BATCH = 2  # example batch for the export; the batch dimension is exported dynamic
TEMPLATE_CHECK_SAMPLES = 8
TEMPLATE_CHECK_RTOL = 1e-4

# Counters for tests and benchmarks: dynamo_exports, template_memory_hits, template_disk_loads,
# template_checks, weight_swaps, onnx_cache_hits, onnx_cache_writes.
STATS: Counter = Counter()

_TEMPLATES: dict[str, "Template"] = {}
_LOCK = threading.RLock()
_SOURCE_HASHES: dict[type, str] = {}


class TemplateError(RuntimeError):
    """New weights cannot be swapped into the exported graph."""


@dataclass
class Binding:
    """Initializer number `index` of the template holds model tensor `tensor` (transposed if `transpose`)."""

    index: int
    initializer: str
    tensor: str
    transpose: bool = False


@dataclass
class Template:
    arch_key: str
    proto: "onnx.ModelProto"
    bindings: list[Binding]
    input_name: str
    output_name: str
    opset: int
    fixed: dict[str, str] = field(default_factory=dict)  # buffers the graph holds as constants: name -> value hash
    source: str = "dynamo"  # "dynamo" (exported in this process) or "disk"
    optimized: bool = True  # exported with onnxscript's optimizer

    def meta(self) -> dict[str, Any]:
        return {
            "arch_key": self.arch_key,
            "bindings": [asdict(b) for b in self.bindings],
            "input_name": self.input_name,
            "output_name": self.output_name,
            "opset": self.opset,
            "fixed": self.fixed,
            "optimized": self.optimized,
        }


@dataclass
class OnnxModel:
    """The FP32 ONNX model of one set of weights."""

    data: bytes
    path: Path
    arch_key: str
    weights_key: str
    input_name: str
    output_name: str
    opset: int
    source: str  # "dynamo": exported for this very model; "swap": template + these weights; "cache": read from disk

    def proto(self) -> "onnx.ModelProto":
        import onnx

        return onnx.load_from_string(self.data)


def clear_memory_cache() -> None:
    """Forget the in-process templates (tests; the disk cache is untouched)."""
    with _LOCK:
        _TEMPLATES.clear()


# --------------------------------------------------------------------------------------------------- keys


def model_tensors(model: "torch.nn.Module") -> tuple[dict[str, np.ndarray], set[str]]:
    """All parameters and buffers as numpy arrays (by state name), and the names that are parameters."""
    params = {n: p.detach().cpu().numpy() for n, p in model.named_parameters()}
    buffers = {n: b.detach().cpu().numpy() for n, b in model.named_buffers() if n not in params}
    return {**params, **buffers}, set(params)


def weights_key(tensors: dict[str, np.ndarray]) -> str:
    return sha256(*(f"{n}|{array_hash(a)}" for n, a in tensors.items()))


def _source_hash(cls: type) -> str:
    h = _SOURCE_HASHES.get(cls)
    if h is None:
        try:
            h = sha256(inspect.getsource(cls))
        except (OSError, TypeError):
            fwd = getattr(cls, "forward", None)
            code = getattr(fwd, "__code__", None)
            h = sha256(marshal.dumps(code)) if code is not None else sha256(cls.__qualname__)
        _SOURCE_HASHES[cls] = h
    return h


def arch_key(model: "torch.nn.Module", window: int, tensors: dict[str, np.ndarray]) -> str:
    """Everything that shapes the exported graph, but no weight values."""
    import torch

    try:
        import onnxscript

        onnxscript_version = onnxscript.__version__
    except ImportError:  # pragma: no cover
        onnxscript_version = "-"
    parts = [FORMAT_VERSION, torch.__version__, onnxscript_version, f"window={window}", repr(model)]
    for name, mod in model.named_modules():
        cls = type(mod)
        attrs = sorted(
            (k, repr(v))
            for k, v in vars(mod).items()
            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, tuple))
        )
        parts.append(f"{name}|{cls.__module__}.{cls.__qualname__}|{_source_hash(cls)}|{attrs}")
    parts += [f"{n}|{a.dtype}|{a.shape}" for n, a in tensors.items()]
    return sha256(*parts)


def artefact_path(model: "torch.nn.Module", window: int, cache_dir: Path, kind: str, settings: dict[str, Any],
                  versions: tuple[str, ...], suffix: str) -> Path:
    """Where a quantized artefact of `model`'s current weights is cached: `<cache_dir>/<kind>/` keyed by the
    architecture, the weights, and the quantizer's settings and versions."""
    tensors, _ = model_tensors(model)
    akey, wkey = arch_key(model, window, tensors), weights_key(tensors)
    skey = sha256(repr(sorted(settings.items())), *versions)
    return cache_dir / kind / f"{akey[:24]}-{wkey[:24]}-{skey[:16]}{suffix}"


# --------------------------------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet():
    """The exporter warns about optional packages (torchvision) and deprecated internals; keep logs clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def dynamo_export(model: "torch.nn.Module", example: np.ndarray, optimize: bool = True) -> "onnx.ModelProto":
    """The dynamo exporter, batch dimension dynamic, weights inside the model (no external data).

    `optimize=True` (onnxscript's optimizer) gives the cleaner graph but constant-folds computations on
    parameters (`w.T` becomes an initializer `permute`, `w * 2` one named `mul`); `optimize=False` keeps them
    as graph nodes on the parameter initializers."""
    import torch

    STATS["dynamo_exports"] += 1
    x = np.ascontiguousarray(example, dtype=np.float32)
    if len(x) < EXPORT_BATCH:  # a batch of 1 would be specialised into the graph
        x = np.repeat(x, EXPORT_BATCH, axis=0)[:EXPORT_BATCH]
    with _quiet():
        program = torch.onnx.export(
            model,
            (torch.from_numpy(x[:EXPORT_BATCH].copy()),),
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
            optimize=optimize,
        )
    proto = program.model_proto
    _strip_debug_info(proto)
    return proto


def _strip_debug_info(proto: "onnx.ModelProto") -> None:
    """Drop the exporter's per-node metadata (stack traces, fx nodes, name scopes): ~70% of the file for the
    unrolled LSTM, and it carries source paths. The graph itself is untouched."""
    graphs = [proto.graph, *(f for f in proto.functions)]
    for g in graphs:
        for node in g.node:
            del node.metadata_props[:]
            node.doc_string = ""


def _io_names(proto: "onnx.ModelProto") -> tuple[str, str]:
    init_names = {t.name for t in proto.graph.initializer}
    inputs = [i.name for i in proto.graph.input if i.name not in init_names]
    outputs = [o.name for o in proto.graph.output]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"expected a model with one input and one output, the export has inputs {inputs}, outputs {outputs}")
    return inputs[0], outputs[0]


def _opset(proto: "onnx.ModelProto") -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)


def _bind(proto: "onnx.ModelProto", tensors: dict[str, np.ndarray], params: set[str]) -> tuple[list[Binding], dict[str, str]]:
    """Which initializer holds which model tensor; fails loudly when a parameter has none."""
    from onnx import numpy_helper

    inits = list(proto.graph.initializer)
    arrays = [numpy_helper.to_array(t) for t in inits]
    by_name = {t.name: i for i, t in enumerate(inits)}

    def transposed(a: np.ndarray, arr: np.ndarray) -> bool | None:
        """How initializer `a` holds tensor `arr`: False as is (equal), True transposed, None not at all."""
        if a.dtype != arr.dtype:
            return None
        if a.shape == arr.shape and np.array_equal(a, arr):
            return False
        if arr.ndim == 2 and a.shape == arr.T.shape and np.array_equal(a, arr.T):
            return True
        return None

    bindings: list[Binding] = []
    claimed: dict[int, str] = {}
    fixed: dict[str, str] = {}
    unbound: list[str] = []
    for name, arr in tensors.items():
        hits: list[tuple[int, bool]] = []
        if name in by_name:
            i = by_name[name]
            t = transposed(arrays[i], arr)
            if t is None:
                raise TemplateError(
                    f"ONNX initializer {name!r} is named after the model tensor but holds other values "
                    f"(shape {arrays[i].shape} vs {arr.shape}); cannot swap weights"
                )
            hits.append((i, t))
        else:  # a derived copy under another name: equal values, possibly transposed
            for i, a in enumerate(arrays):
                if inits[i].name in tensors:  # named after another tensor: that one's
                    continue
                t = transposed(a, arr)
                if t is not None:
                    hits.append((i, t))
        for i, t in hits:
            if i in claimed:
                raise TemplateError(
                    f"ONNX initializer {inits[i].name!r} matches both {claimed[i]!r} and {name!r} by value; cannot tell "
                    "which one it holds (give the tensors distinct values before the first export)"
                )
            claimed[i] = name
            bindings.append(Binding(i, inits[i].name, name, t))
        if not hits:
            if name in params:
                unbound.append(name)
            else:  # a buffer the graph does not read, or holds as a folded constant: it must never change
                fixed[name] = array_hash(arr)
    if unbound:
        raise TemplateError(
            f"parameters {unbound} have no initializer in the exported ONNX graph (folded into constants or "
            "unused by forward), so new weights cannot be swapped into the template; initializers: "
            f"{[t.name for t in inits][:20]}"
        )
    return bindings, fixed


def swap(template: Template, tensors: dict[str, np.ndarray]) -> "onnx.ModelProto":
    """A copy of the template holding `tensors` instead of the template's weights."""
    import onnx
    from onnx import numpy_helper

    for name, h in template.fixed.items():
        if array_hash(tensors[name]) != h:
            raise TemplateError(
                f"buffer {name!r} is a constant of the exported graph and differs from the template's; "
                "weights cannot be swapped (make it a parameter, or give it the same value in every model)"
            )
    proto = onnx.ModelProto()
    proto.CopyFrom(template.proto)
    inits = proto.graph.initializer
    for b in template.bindings:
        arr = tensors[b.tensor]
        if b.transpose:
            arr = arr.T
        old = inits[b.index]
        if tuple(old.dims) != arr.shape:
            raise TemplateError(f"initializer {old.name!r} has shape {tuple(old.dims)}, model tensor {b.tensor!r} {arr.shape}")
        old.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), old.name))
    STATS["weight_swaps"] += 1
    return proto


def _check_template(template: Template, model: "torch.nn.Module", calibration: np.ndarray) -> None:
    """Swap in randomly perturbed weights; ONNX Runtime must then reproduce torch with those weights."""
    import onnxruntime as ort
    import torch
    from torch.func import functional_call

    STATS["template_checks"] += 1
    gen = torch.Generator().manual_seed(20240917)
    bound = {b.tensor for b in template.bindings}
    state = {}
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        p = p.detach()
        if name in bound and p.is_floating_point():  # constants (template.fixed) keep their values
            scale = float(p.abs().mean()) + 1e-3
            p = p + 0.5 * scale * torch.randn(p.shape, generator=gen, dtype=p.dtype)
        state[name] = p
    x = np.ascontiguousarray(calibration[:TEMPLATE_CHECK_SAMPLES], dtype=np.float32)
    with torch.inference_mode():
        ref = functional_call(model, state, (torch.from_numpy(x),)).float().numpy()
    proto = swap(template, {n: t.cpu().numpy() for n, t in state.items()})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    y = sess.run([template.output_name], {template.input_name: x})[0]
    err = float(np.abs(y - ref).max())
    allowed = TEMPLATE_CHECK_RTOL * max(1.0, float(np.abs(ref).max()))
    if not err <= allowed:
        bound_inits = {b.initializer for b in template.bindings}
        suspects = [t.name for t in template.proto.graph.initializer if t.name not in bound_inits and np.prod(t.dims) > 1]
        raise TemplateError(
            f"weight swap does not reproduce torch (max abs error {err:.3g} > {allowed:.3g} with perturbed weights): "
            f"the export holds parameter-derived values the binding missed; unbound initializers: {suspects[:20]}"
        )


def _template_paths(cache_dir: Path, akey: str) -> tuple[Path, Path]:
    d = cache_dir / "templates"
    return d / f"{akey}.onnx", d / f"{akey}.json"


def _load_template(cache_dir: Path, akey: str) -> Template | None:
    import onnx

    onnx_path, meta_path = _template_paths(cache_dir, akey)
    if not (onnx_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        proto = onnx.load_from_string(onnx_path.read_bytes())
    except Exception:  # noqa: BLE001 - a damaged entry is exported again
        return None
    if meta.get("arch_key") != akey:
        return None
    return Template(
        arch_key=akey,
        proto=proto,
        bindings=[Binding(**b) for b in meta["bindings"]],
        input_name=meta["input_name"],
        output_name=meta["output_name"],
        opset=meta["opset"],
        fixed=meta.get("fixed", {}),
        source="disk",
        optimized=meta.get("optimized", True),
    )


def _export_template(model: "torch.nn.Module", calibration: np.ndarray, akey: str,
                     tensors: dict[str, np.ndarray], params: set[str]) -> Template:
    """Export, bind and check; if the optimized graph folded a parameter into a derived constant, export again
    without the optimizer (a second export only for such architectures)."""
    errors = []
    for optimize in (True, False):
        proto = dynamo_export(model, calibration, optimize=optimize)
        input_name, output_name = _io_names(proto)
        try:
            bindings, fixed = _bind(proto, tensors, params)
            template = Template(akey, proto, bindings, input_name, output_name, _opset(proto), fixed, "dynamo", optimize)
            _check_template(template, model, calibration)
            return template
        except TemplateError as exc:
            errors.append(f"{'optimized' if optimize else 'unoptimized'} export: {exc}")
    raise TemplateError("; ".join(errors))


def template_for(model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path,
                 tensors: dict[str, np.ndarray] | None = None, params: set[str] | None = None,
                 akey: str | None = None) -> Template:
    """The architecture's template: from memory, else from disk, else a dynamo export of `model`."""
    if tensors is None or params is None:
        tensors, params = model_tensors(model)
    akey = akey or arch_key(model, calibration.shape[1], tensors)
    with _LOCK:
        template = _TEMPLATES.get(akey)
        if template is not None:
            STATS["template_memory_hits"] += 1
            return template
        template = _load_template(cache_dir, akey)
        if template is not None:
            try:
                _check_template(template, model, calibration)  # once per process and architecture
                STATS["template_disk_loads"] += 1
            except TemplateError:  # stale or damaged: export again
                template = None
        if template is None:
            template = _export_template(model, calibration, akey, tensors, params)
        if template.source == "dynamo":
            onnx_path, meta_path = _template_paths(cache_dir, akey)
            write_bytes(onnx_path, template.proto.SerializeToString())
            write_text(meta_path, json.dumps(template.meta(), indent=1))
        _TEMPLATES[akey] = template
        return template


def onnx_fp32(model: "torch.nn.Module", calibration: np.ndarray, cache_dir: Path) -> OnnxModel:
    """The FP32 ONNX model of `model`'s current weights: from the disk cache, else template + weight swap."""
    import onnx

    tensors, params = model_tensors(model)
    wkey = weights_key(tensors)
    akey = arch_key(model, calibration.shape[1], tensors)
    path = cache_dir / "onnx" / f"{akey[:24]}-{wkey[:24]}.onnx"
    if path.is_file():
        data = path.read_bytes()
        try:
            proto = onnx.load_from_string(data)
            input_name, output_name = _io_names(proto)
        except Exception:  # a damaged entry: rebuild it  # noqa: BLE001
            pass
        else:
            STATS["onnx_cache_hits"] += 1
            return OnnxModel(data, path, akey, wkey, input_name, output_name, _opset(proto), "cache")
    exports = STATS["dynamo_exports"]
    template = template_for(model, calibration, cache_dir, tensors, params, akey)
    proto = swap(template, tensors)
    meta = {"harness.arch_key": akey, "harness.weights_key": wkey}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    data = proto.SerializeToString()
    write_bytes(path, data)
    STATS["onnx_cache_writes"] += 1
    source = "dynamo" if STATS["dynamo_exports"] > exports else "swap"
    return OnnxModel(data, path, akey, wkey, template.input_name, template.output_name, template.opset, source)


def initializer_bytes(proto: "onnx.ModelProto") -> int:
    """Bytes of weight data in a graph (its initializers), without the graph structure around them."""
    total = 0
    for t in proto.graph.initializer:
        total += len(t.raw_data) if t.raw_data else sum(
            len(getattr(t, f)) * 4 for f in ("float_data", "int32_data", "int64_data", "double_data"))
    return total


def quantizable_input_layers(proto: "onnx.ModelProto", input_name: str,
                             op_types: tuple[str, ...] = ("Gemm", "MatMul")) -> list[str]:
    """Names of the Gemm/MatMul nodes whose activation is the raw model input (through slicing/reshaping only):
    the layers static INT8 keeps in FP32 unless asked, since a calibrated input range clips anomalies."""
    passthrough = {"Slice", "Reshape", "Squeeze", "Unsqueeze", "Cast", "Gather", "Transpose", "Flatten", "Identity"}
    producer = {out: node for node in proto.graph.node for out in node.output}
    names = []
    for node in proto.graph.node:
        if node.op_type not in op_types or not node.input:
            continue
        value, seen = node.input[0], 0
        while value in producer and producer[value].op_type in passthrough and seen < 64:
            value, seen = producer[value].input[0], seen + 1
        if value == input_name:
            names.append(node.name)
    return names

