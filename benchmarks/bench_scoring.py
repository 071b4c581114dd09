"""Scoring speed on NAB v1.1 (data/nab, $HARNESS_NAB or --corpus): prints figures, asserts nothing.

1. `harness nab score <numenta> --optimize --json` as a whole process (median wall of --repeat runs), against the
   12.3 s median that NAB's own `run.py -d numenta --optimize --score --normalize` takes on a 2-core machine.
2. In-memory scoring of a detector output: all files, 3 profiles, optimized thresholds, with the extra metrics
   (precision/recall/F1, latency, FP events at each profile's threshold and the F1-best one, and the PR curve).
"""

from __future__ import annotations

import os
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

NAB_OWN_SECONDS = 12.3  # NAB's run.py, median of 3 on a 2-core machine (shared/nab/SOURCE.md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.environ.get("HARNESS_NAB") or str(Path(__file__).resolve().parents[1] / "data" / "nab"),
                    help="NAB v1.1 (harness nab fetch data/nab); default $HARNESS_NAB, else data/nab")
    ap.add_argument("--detector", default="numenta")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    corpus = Path(args.corpus)
    results = corpus / "results" / args.detector

    walls, out = [], None
    for _ in range(args.repeat):
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "nab", "score", str(results), "--corpus", str(corpus), "--optimize", "--json"],
            capture_output=True, text=True, check=True,
        )
        walls.append(time.perf_counter() - t)
        out = json.loads(proc.stdout)
    from harness.scoring.profiles import NAB_PROFILES

    wall = statistics.median(walls)
    scores = " / ".join(f"{out['profiles'][p.name]['score']:.4f}" for p in NAB_PROFILES)
    print(f"harness nab score {args.detector} --optimize --json: median {wall:.3f} s wall over {args.repeat} runs "
          f"(min {min(walls):.3f}); {NAB_OWN_SECONDS / wall:.1f}x faster than NAB's {NAB_OWN_SECONDS} s; scores {scores}")

    from harness.corpus.layout import load_corpus
    from harness.scoring.nab import CorpusIndex, score_detector
    from harness.scoring.results_layout import read_results_dir

    c = load_corpus(corpus)
    name, scores_in = read_results_dir(results, c)
    index = CorpusIndex.build(c.files, label_windows=c.label_windows)
    times = []
    for _ in range(30):
        t = time.perf_counter()
        score_detector(index, scores_in, name)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    CorpusIndex.build(c.files, label_windows=c.label_windows)
    build = time.perf_counter() - t
    print(f"in-memory scoring ({len(c.files)} files, {c.n_rows} rows, 3 profiles, optimized, extra metrics, PR curve): "
          f"median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms over 30 "
          f"(+ {build * 1000:.1f} ms once per corpus for its window index)")


if __name__ == "__main__":
    main()
