"""Record by record (`start` / `score_one` / `learn_one`) on the longest NAB file: events per second over the
first and the last 1,000 scored events, per detector and backend. A cost per event that does not grow with the
stream shows as equal figures at both ends. Prints figures; asserts nothing.

    python benchmarks/bench_streaming.py [--corpus data/nab] [--events 1000]

Each measurement runs the whole stream once in this process, timing each record's score_one + learn_one;
learned detectors use their NAB defaults and train when the first scored record arrives (that record's time is
the training, reported apart and left out of the first window).
"""

from __future__ import annotations

import os
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = [
    ("null", None), ("random", None), ("windowedGaussian", None),
    ("lstm", None), ("lstm", {"backend": "onnxruntime"}), ("lstm", {"backend": "onnxruntime", "precision": "int8"}),
    ("lstm", {"backend": "openvino"}),
    ("autoencoder", None), ("autoencoder", {"backend": "onnxruntime"}),
    ("autoencoder", {"backend": "onnxruntime", "precision": "int8"}), ("autoencoder", {"backend": "openvino"}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.environ.get("HARNESS_NAB") or str(Path(__file__).resolve().parents[1] / "data" / "nab"),
                    help="NAB v1.1 (harness nab fetch data/nab); default $HARNESS_NAB, else data/nab")
    ap.add_argument("--events", type=int, default=1000)
    args = ap.parse_args()

    from harness.corpus.layout import load_corpus
    from harness.detectors import Stream, build_detector
    from harness.environment import cpu_model
    from harness.scoring.nab import probation_rows

    f = max(load_corpus(args.corpus).files, key=lambda s: s.n_rows)
    P = probation_rows(f.n_rows)
    n = args.events
    print(f"{f.name}: {f.n_rows} records, probation {P}; events/s over the first and last {n} scored events ({cpu_model()})")
    print(f"{'detector':<14} {'backend':<22} {'first':>10} {'last':>10} {'last/first':>10} {'training s':>10}")
    cache = tempfile.mkdtemp(prefix="bench-streaming-")
    for kind, backend in CASES:
        det = build_detector(kind, {}, backend, cache_dir=cache)
        det.start(Stream(f.name, P, f.n_rows))
        cost = np.empty(f.n_rows)
        for i, (t, x) in enumerate(zip(f.timestamps, f.values.tolist())):
            t0 = time.perf_counter()
            det.score_one(t, x)
            det.learn_one(t, x)
            cost[i] = time.perf_counter() - t0
        first = cost[P + 1 : P + 1 + n]  # record P trains the model: reported apart
        last = cost[-n:]
        name = "-" if backend is None and not det.uses_backends else "/".join(
            [backend["backend"], backend.get("precision", "fp32")] if backend else ["torch", "fp32"])
        print(f"{kind:<14} {name:<22} {1 / first.mean():>10.0f} {1 / last.mean():>10.0f} {first.mean() / last.mean():>10.2f} {cost[P]:>10.2f}")


if __name__ == "__main__":
    main()
