"""A learned detector on the full NAB corpus: NAB standard / low-FP / low-FN scores (optimized thresholds) and wall.

    python benchmarks/bench_learned_nab.py lstm
    python benchmarks/bench_learned_nab.py autoencoder --params '{"epochs": 10}' --workers 2

Files are spread over `--workers` processes (default: every CPU core), each with 1 torch thread; the longest
files go first so the processes finish together. Scores are those of `harness nab score --optimize`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

_DET = None


def _init(kind: str, params: dict) -> None:
    global _DET
    import torch

    torch.set_num_threads(1)
    from harness.detectors import build_detector

    _DET = build_detector(kind, {"threads": 1, **params})


def _score(f) -> tuple[str, np.ndarray, np.ndarray, float]:
    from harness.scoring.nab import probation_rows

    t = time.perf_counter()
    scores = _DET.score_file(f, probation_rows(f.n_rows))
    return f.name, scores, _DET.last_errors, time.perf_counter() - t


def score_corpus(kind: str, params: dict, files, workers: int) -> tuple[dict, dict, dict]:
    """Scores, raw errors and seconds, each a dict by file name."""
    order = sorted(files, key=lambda f: -f.n_rows)
    if workers <= 1:
        _init(kind, params)
        out = [_score(f) for f in order]
    else:
        with get_context("fork").Pool(workers, initializer=_init, initargs=(kind, params)) as pool:
            out = pool.map(_score, order, chunksize=1)
    return {n: s for n, s, _, _ in out}, {n: e for n, _, e, _ in out}, {n: t for n, _, _, t in out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("detector", help="registry name (lstm, autoencoder, ...)")
    ap.add_argument("--params", default="{}", help="JSON object of detector params")
    ap.add_argument("--corpus", default=os.environ.get("HARNESS_NAB") or str(Path(__file__).resolve().parents[1] / "data" / "nab"),
                    help="NAB v1.1 (harness nab fetch data/nab); default $HARNESS_NAB, else data/nab")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--save", help="write per-file scores and raw errors to this .npz")
    ap.add_argument("--per-file", action="store_true", help="print each file's seconds")
    args = ap.parse_args()

    from harness.corpus.layout import load_corpus
    from harness.scoring.nab import score_detector
    from harness.scoring.profiles import REFERENCE_PROFILE

    params = json.loads(args.params)
    corpus = load_corpus(args.corpus)
    t = time.perf_counter()
    scores, errors, secs = score_corpus(args.detector, params, corpus.files, args.workers)
    wall = time.perf_counter() - t
    outputs = [scores[f.name] for f in corpus.files]
    report = score_detector(corpus.files, outputs, args.detector, label_windows=corpus.label_windows)
    pr = report.profiles
    std = pr[REFERENCE_PROFILE]
    print(
        f"{args.detector} {json.dumps(params)}: NAB standard {std.score:.2f} / "
        f"low FP {pr['reward_low_FP_rate'].score:.2f} / low FN {pr['reward_low_FN_rate'].score:.2f} "
        f"(threshold {std.threshold:.6g}, windows detected {std.tp}, missed {std.fn}, FP rows {std.fp}, "
        f"F1 {report.detection[REFERENCE_PROFILE].f1:.3f}, FP events {report.detection[REFERENCE_PROFILE].fp_events}); "
        f"{len(corpus.files)} files, {corpus.n_rows} rows, {wall:.1f} s wall on {args.workers} worker(s), "
        f"{sum(secs.values()):.1f} s summed per file"
    )
    if args.per_file:
        for name in sorted(secs, key=lambda k: -secs[k]):
            print(f"  {secs[name]:6.2f} s  {name}")
    if args.save:
        np.savez_compressed(
            args.save, **{f"scores/{k}": v for k, v in scores.items()}, **{f"errors/{k}": v for k, v in errors.items()}
        )


if __name__ == "__main__":
    main()
