"""Inference backends on the two example models (tests/test_backends.py): prints figures, asserts nothing.

For each model (LSTM unrolled from Linear gates, dense autoencoder; window 32, hidden 32, briefly trained unless
--untrained) and each backend/precision:
- prepare time: `first` (cold: no template in memory, empty cache, so it includes the dynamo export),
  `swapped` (another model of the same architecture: template weight swap + quantize + compile, the per-file
  cost), `cached` (the same weights again: artefacts read from the disk cache);
- latency p50/p95 at batch 1 and batch --batch (harness.timing.measure: 20 warm-up calls, >= 100 calls and
  >= --min-duration s), events/s at both, speedup of p50 against torch fp32;
- max abs error and relative error (max abs / max |y_torch|) against torch on held-out calibration-like windows,
  and on the same windows with one spike of +-4 each ("spiky": values outside the calibration range);
- model size: the artefact the backend loads (ONNX file, OpenVINO IR .xml + .bin, torch state_dict), and the
  weight data in it (`weights B`: ONNX initializers, IR .bin).

`--seeds N` instead sweeps INT8 accuracy over N seeds, untrained and trained (the tolerances of
tests/test_backends.py come from it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.environment import cpu_model

REPO = Path(__file__).resolve().parents[1]

SPECS = [
    {"backend": "torch"},
    {"backend": "onnxruntime"},
    {"backend": "onnxruntime", "precision": "int8", "quantization": "dynamic"},
    {"backend": "onnxruntime", "precision": "int8", "quantization": "static"},
    {"backend": "openvino"},
    {"backend": "openvino", "precision": "int8"},
]


def examples():
    """The test module's example models and window generator."""
    spec = importlib.util.spec_from_file_location("test_backends", REPO / "tests" / "test_backends.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["test_backends"] = mod
    spec.loader.exec_module(mod)
    return mod


def train(ex, kind: str, seed: int, steps: int):
    """A few Adam steps on calibration-like windows: LSTM predicts the next value, the autoencoder reconstructs."""
    import torch

    model = ex.make_model(kind, seed)
    if steps <= 0:
        return model
    torch.manual_seed(seed)
    data = torch.from_numpy(ex.windows(4096, seed=1000 + seed, window=ex.WINDOW + 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        xb = data[torch.randint(0, len(data), (128,))]
        x = xb[:, : ex.WINDOW]
        y = model(x)
        loss = ((y[:, 0] - xb[:, ex.WINDOW]) ** 2).mean() if kind == "lstm" else ((y - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def spiky(x: np.ndarray, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = x.copy()
    out[np.arange(len(x)), rng.integers(0, x.shape[1], len(x))] += rng.choice([-4.0, 4.0], len(x))
    return out


def errors(compiled, model, x: np.ndarray) -> dict[str, float]:
    from harness.backends import output_errors
    from harness.backends.base import torch_reference

    return output_errors(compiled.infer(x), torch_reference(model, x))


def token(spec: dict) -> str:
    from harness.backends import as_spec

    return as_spec(spec).token


def bench(args, ex) -> list[dict]:
    import torch

    from harness.backends import as_spec, prepare
    from harness.backends import onnx_export
    from harness.timing import measure

    rows = []
    calibration = ex.windows(256, seed=100)
    held_out = ex.windows(max(args.batch, 256), seed=200)
    x1, xb = held_out[:1], held_out[: args.batch]
    root = Path(args.cache_dir)
    for kind in args.models:
        t = time.perf_counter()
        model_a = train(ex, kind, 0, args.train_steps)
        model_b = train(ex, kind, 1, args.train_steps)
        print(f"# {kind}: trained 2 models in {time.perf_counter() - t:.1f} s ({args.train_steps} steps)", flush=True)
        base = None
        for i, spec in enumerate(SPECS):
            spec = {**spec, "threads": args.threads}
            name = token(spec)
            cache = root / f"{kind}-{i}"
            onnx_export.clear_memory_cache()  # `first` is cold: exports the template
            t = time.perf_counter()
            prepare(spec, model_a, calibration, cache)
            first = time.perf_counter() - t
            exports = onnx_export.STATS["dynamo_exports"]
            t = time.perf_counter()
            comp = prepare(spec, model_b, calibration, cache)
            swapped = time.perf_counter() - t
            assert onnx_export.STATS["dynamo_exports"] == exports, "swapped weights must not export"
            t = time.perf_counter()
            prepare(spec, model_b, calibration, cache)
            cached = time.perf_counter() - t
            torch.set_num_threads(args.threads)
            lat1 = measure(comp.infer, x1, min_duration_s=args.min_duration)
            latb = measure(comp.infer, xb, min_duration_s=args.min_duration)
            err, err_spiky = errors(comp, model_b, held_out), errors(comp, model_b, spiky(held_out))
            row = {
                "model": kind, "spec": name, "threads": args.threads,
                "prepare_first_s": first, "prepare_swapped_s": swapped, "prepare_cached_s": cached,
                "b1": lat1.to_dict(), f"b{args.batch}": latb.to_dict(),
                "max_abs_err": err["max_abs_err"], "rel_err": err["rel_err"],
                "spiky_max_abs_err": err_spiky["max_abs_err"], "spiky_rel_err": err_spiky["rel_err"],
                "size_bytes": comp.size_bytes, "info": comp.info,
            }
            if as_spec(spec).backend == "torch":
                base = row
            row["speedup_b1"] = base["b1"]["p50_ms"] / lat1.p50_ms
            row["speedup_b"] = base[f"b{args.batch}"]["p50_ms"] / latb.p50_ms
            rows.append(row)
            print_row(row, args.batch, header=(i == 0))
    return rows


def print_row(r: dict, batch: int, header: bool) -> None:
    b = f"b{batch}"
    if header:
        print(f"{'model':11s} {'backend':25s} {'first s':>7s} {'swap s':>7s} {'cache s':>7s} "
              f"{'b1 p50 us':>9s} {'b1 p95':>7s} {'b1 ev/s':>8s} {'x b1':>5s} "
              f"{b + ' p50 us':>11s} {'p95':>7s} {'ev/s':>8s} {'x ' + b:>6s} "
              f"{'max abs err':>11s} {'rel err':>8s} {'spiky rel':>9s} {'size B':>8s} {'weights B':>9s}")
    print(f"{r['model']:11s} {r['spec']:25s} {r['prepare_first_s']:7.2f} {r['prepare_swapped_s']:7.3f} {r['prepare_cached_s']:7.3f} "
          f"{r['b1']['p50_ms'] * 1e3:9.1f} {r['b1']['p95_ms'] * 1e3:7.1f} {r['b1']['events_per_s']:8.0f} {r['speedup_b1']:5.2f} "
          f"{r[b]['p50_ms'] * 1e3:11.1f} {r[b]['p95_ms'] * 1e3:7.1f} {r[b]['events_per_s']:8.0f} {r['speedup_b']:6.2f} "
          f"{r['max_abs_err']:11.2e} {r['rel_err']:8.4f} {r['spiky_rel_err']:9.4f} {r['size_bytes']:8d} "
          f"{r['info'].get('weights_bytes', 0):9d}", flush=True)


def sweep(args, ex) -> list[dict]:
    """INT8 relative error over seeds, untrained and trained, batch 256 and batch 1."""
    from harness.backends import prepare
    from harness.backends.base import torch_reference

    calibration = ex.windows(256, seed=100)
    held_out = ex.windows(256, seed=200)
    root = Path(args.cache_dir)
    rows = []
    for kind in args.models:
        for steps in (0, args.train_steps):
            for seed in range(args.seeds):
                model = train(ex, kind, seed, steps)
                ref = torch_reference(model, held_out)
                scale = float(np.abs(ref).max())
                for spec in SPECS:
                    if spec.get("precision") != "int8":
                        continue
                    if spec.get("quantization") != "dynamic" and args.headroom is not None:
                        spec = {**spec, "calibration_headroom": args.headroom}
                    c = prepare(spec, model, calibration, root)
                    y = c.infer(held_out)
                    y1 = np.concatenate([c.infer(held_out[i : i + 1]) for i in range(16)])
                    row = {"model": kind, "trained": bool(steps), "seed": seed, "spec": token(spec),
                           "rel_err": float(np.abs(y - ref).max()) / scale,
                           "rel_err_b1": float(np.abs(y1 - ref[:16]).max()) / scale,
                           "spiky_rel_err": errors(c, model, spiky(held_out))["rel_err"]}
                    rows.append(row)
                    print(f"{kind:11s} trained={row['trained']!s:5s} seed={seed} {row['spec']:25s} rel {row['rel_err']:.4f} "
                          f"b1 {row['rel_err_b1']:.4f} spiky {row['spiky_rel_err']:.4f}", flush=True)
    print("# worst relative error over seeds (batch 256 / batch 1 / spiky):")
    for kind in args.models:
        for trained in (False, True):
            for name in sorted({r["spec"] for r in rows}):
                sel = [r for r in rows if r["model"] == kind and r["trained"] == trained and r["spec"] == name]
                print(f"  {kind:11s} {'trained' if trained else 'untrained':9s} {name:25s} "
                      f"{max(r['rel_err'] for r in sel):.4f} / {max(r['rel_err_b1'] for r in sel):.4f} / "
                      f"{max(r['spiky_rel_err'] for r in sel):.4f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lstm,autoencoder", type=lambda s: s.split(","))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--min-duration", type=float, default=1.0)
    ap.add_argument("--train-steps", type=int, default=150, help="Adam steps per model (0: untrained)")
    ap.add_argument("--untrained", action="store_true", help="same as --train-steps 0")
    ap.add_argument("--seeds", type=int, default=0, help="sweep INT8 accuracy over this many seeds instead")
    ap.add_argument("--headroom", type=float, default=None, help="calibration_headroom of static INT8 (default: the spec's)")
    ap.add_argument("--cache-dir", help="default: a fresh temporary folder, removed at the end (so `first` is cold)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if args.untrained:
        args.train_steps = 0
    import torch

    torch.set_num_threads(args.threads)
    ex = examples()
    from harness.backends.base import versions

    import nncf  # noqa: F401  (import cost kept out of the first openvino-int8 prepare)
    import onnxruntime  # noqa: F401
    import openvino  # noqa: F401

    print(f"# {cpu_model()}, {os.cpu_count()} CPUs, threads={args.threads}; {versions()}")
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        args.cache_dir = args.cache_dir or tmp
        rows = sweep(args, ex) if args.seeds else bench(args, ex)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
