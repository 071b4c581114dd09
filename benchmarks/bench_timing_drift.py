"""How much one measurement drifts on this machine: the same model, timed in back-to-back one-round
measurements in one process. Prints each round's p50 and the spread; asserts nothing.

    python benchmarks/bench_timing_drift.py [--rounds 5] [--backends torch,onnxruntime]

The default model is the `lstm` detector's module in its default shape (window 16, hidden 16), untrained.
This is why `timing.rounds` and `throughput_spread_pct` exist (docs/timing.md).
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

from harness.environment import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", default="torch,onnxruntime", type=lambda s: s.split(","))
    ap.add_argument("--min-duration", type=float, default=1.0, help="seconds per round and batch size")
    args = ap.parse_args()

    import torch

    from harness.backends import prepare
    from harness.detectors.torch_models import LinearLSTM
    from harness.timing import time_batches

    torch.manual_seed(0)
    model = LinearLSTM(16, 16, "last").eval()
    windows = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)
    print(f"# {cpu_model()}; lstm window 16 hidden 16; {args.rounds} rounds of {args.min_duration} s per batch size")
    with tempfile.TemporaryDirectory() as cache:
        for backend in args.backends:
            compiled = prepare({"backend": backend}, model, windows, cache)
            for key in ("batch1", "batchN"):
                p50 = []
                for _ in range(args.rounds):
                    t = time_batches(compiled.infer, windows, batch=256, min_duration_s=args.min_duration, rounds=1)
                    p50.append(t[key]["p50_ms"])
                spread = 100.0 * (max(p50) - min(p50)) / float(np.median(p50))
                print(f"{backend:12s} {key}: p50 ms per round {', '.join(f'{v:.3f}' for v in p50)}; spread {spread:.0f}%")


if __name__ == "__main__":
    main()
