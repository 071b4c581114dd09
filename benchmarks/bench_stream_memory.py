"""Memory per live stream of each reference variant (docs/serving.md): what one shard's `StreamTable` grows by per
stream, streams created and then past their probation (a learned stream holds its own trained model, its
backend's compiled copy, its window and its likelihood's history). Prints figures; asserts nothing.

    python benchmarks/bench_stream_memory.py [--streams 40] [--probation 750]

Each variant runs in a fresh process (`--one`), so one's allocations do not hide the next one's: RSS after a
first stream (imports, runtimes loaded) and after `--streams` more, warmed past probation; the difference per
stream is the figure. A stream still in probation is reported too (its records are kept until it trains).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = [
    ("windowedGaussian", None),
    ("autoencoder", {"backend": "onnxruntime", "precision": "fp32"}),
    ("autoencoder", {"backend": "onnxruntime", "precision": "int8"}),
    ("lstm", {"backend": "onnxruntime", "precision": "fp32"}),
    ("lstm", {"backend": "onnxruntime", "precision": "int8"}),
    ("ensemble", {"backend": "onnxruntime", "precision": "fp32"}),
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(kind: str, backend: dict | None, streams: int, probation: int) -> dict:
    import numpy as np

    from harness.serving.api import EventBatch
    from harness.serving.config import Variant
    from harness.serving.streams import StreamTable

    table = StreamTable(Variant(type=kind, backend=backend).detector_factory(), probation, max_streams=10**6)
    n = probation + 50
    t = 1.7e9 + 300.0 * np.arange(n)
    v = 50 + 10 * np.sin(np.arange(n) / 46.0)

    def warm(name: str, seed: int) -> None:
        table.score(EventBatch.of([name] * n, t, v + np.random.default_rng(seed).normal(size=n)))

    warm("first", 0)
    gc.collect()
    base = rss_mb()
    for k in range(streams):
        warm(f"s{k}", k + 1)
    gc.collect()
    warmed = (rss_mb() - base) / streams
    base = rss_mb()
    for k in range(streams):  # streams in probation: their records kept, nothing trained yet
        table.score(EventBatch.of([f"p{k}"] * (probation - 1), t[: probation - 1], v[: probation - 1]))
    gc.collect()
    return {"variant": kind + (f".{backend['backend']}-{backend['precision']}" if backend else ""),
            "warmed_mb": warmed, "in_probation_mb": (rss_mb() - base) / streams}


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--streams", type=int, default=40)
    a.add_argument("--probation", type=int, default=750)
    a.add_argument("--one", help=argparse.SUPPRESS)
    args = a.parse_args()
    if args.one:
        kind, backend = json.loads(args.one)
        print(json.dumps(one(kind, backend, args.streams, args.probation)))
        return
    print(f"Memory per stream, {args.streams} streams each, probation {args.probation} (RSS of one process):")
    for kind, backend in VARIANTS:
        r = subprocess.run([sys.executable, __file__, "--streams", str(args.streams), "--probation", str(args.probation),
                            "--one", json.dumps([kind, backend])], capture_output=True, text=True, cwd=REPO)
        if r.returncode:
            print(f"  {kind} {backend}: failed: {r.stderr.strip().splitlines()[-1:]}")
            continue
        f = json.loads(r.stdout.strip().splitlines()[-1])
        per_100k = f["warmed_mb"] * 100_000 / 1024
        print(f"  {f['variant']:36} {f['warmed_mb'] * 1024:9.1f} KB per warmed stream ({per_100k:8.1f} GB per 100,000); "
              f"{f['in_probation_mb'] * 1024:7.1f} KB per stream in probation", flush=True)


if __name__ == "__main__":
    main()
