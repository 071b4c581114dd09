"""The ensemble detector on NAB, with its settings chosen without looking at the files being scored.

    python benchmarks/bench_nab_best.py            # about 8 min on 2 cores

Protocol (docs/detectors.md), leave one category out:
1. Every candidate member (autoencoders of windows 8, 16, 32, 64 and the LSTM, each with its defaults) runs once
   over the corpus; its per-row errors are kept. A member's errors do not depend on the other members.
2. The grid: every set of 2-4 candidate members x novelty level {off, 0.6, 0.65} x novelty quiet {0.25, 1}.
   Each setting's scores are computed for every file by the ensemble's own code (`Ensemble.scores_from_errors`
   and `with_novelty`) from the cached errors.
3. For each NAB category C: the setting with the best NAB standard score (optimised threshold) on the six
   other categories is chosen, and C's files get that setting's scores. No file's score comes from a setting
   chosen with that file in view.
4. The 58 files' held-out scores are scored together as NAB scores a detector: threshold optimised per
   profile, all three profiles, and F1 at the standard threshold.

It also prints the default setting (`harness/detectors/ensemble.py`, chosen in-sample on the whole corpus) and
the best setting in-sample, for comparison. The member defaults themselves were set on NAB in earlier issues.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learned_nab import score_corpus  # noqa: E402

CANDIDATES = {
    "ae8": ("autoencoder", {"window": 8}),
    "ae16": ("autoencoder", {"window": 16}),
    "ae32": ("autoencoder", {}),
    "ae64": ("autoencoder", {"window": 64}),
    "lstm": ("lstm", {}),
}
LEVELS = (0.0, 0.6, 0.65)
QUIETS = (0.25, 1.0)


def settings() -> list[dict]:
    out = []
    for n in (2, 3, 4):
        for names in itertools.combinations(CANDIDATES, n):
            for level in LEVELS:
                for quiet in QUIETS if level > 0 else QUIETS[:1]:
                    out.append({"members": list(names), "novelty_level": level, "novelty_quiet": quiet})
    return out


def ensemble_scores(setting: dict, files, errors: dict[str, dict[str, np.ndarray]]) -> list[np.ndarray]:
    from harness.detectors.ensemble import Ensemble
    from harness.scoring.nab import probation_rows

    members = [{"type": CANDIDATES[n][0], "params": CANDIDATES[n][1]} for n in setting["members"]]
    ens = Ensemble(members=members, novelty_level=setting["novelty_level"], novelty_quiet=setting["novelty_quiet"])
    out = []
    for f in files:
        P = probation_rows(f.n_rows)
        err = np.column_stack([errors[n][f.name] for n in setting["members"]])
        out.append(ens.with_novelty(ens.scores_from_errors(err, P, f.n_rows), np.asarray(f.values, np.float64), P))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared" / "nab"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    from harness.corpus.layout import load_corpus
    from harness.scoring.nab import score_detector
    from harness.thresholds.crossval import category

    corpus = load_corpus(args.corpus)
    files = corpus.files
    started = time.perf_counter()
    errors = {}
    for name, (kind, params) in CANDIDATES.items():
        _, errors[name], _ = score_corpus(kind, params, files, args.workers)
    print(f"members' errors: {time.perf_counter() - started:.0f} s")

    def nab(scores, subset=None) -> "object":
        idx = range(len(files)) if subset is None else subset
        return score_detector([files[i] for i in idx], [scores[i] for i in idx], "ensemble", label_windows=corpus.label_windows)

    grid = settings()
    scores = [ensemble_scores(s, files, errors) for s in grid]
    print(f"{len(grid)} settings scored: {time.perf_counter() - started:.0f} s")
    cats = sorted({category(f) for f in files})
    held_out: list[np.ndarray | None] = [None] * len(files)
    for c in cats:
        inside = [i for i, f in enumerate(files) if category(f) == c]
        others = [i for i, f in enumerate(files) if category(f) != c]
        fits = [nab(s, others).profiles["standard"].score for s in scores]
        best = int(np.argmax(fits))
        print(f"  held out {c}: chose {json.dumps(grid[best])} ({fits[best]:.2f} on the other categories)")
        for i in inside:
            held_out[i] = scores[best][i]

    def line(label: str, s) -> None:
        r = nab(s)
        pr, d = r.profiles, r.detection["standard"]
        print(f"{label}: NAB standard {pr['standard'].score:.2f} / low FP {pr['reward_low_FP_rate'].score:.2f} / "
              f"low FN {pr['reward_low_FN_rate'].score:.2f}; at the standard threshold F1 {d.f1:.3f}, "
              f"precision {d.precision:.3f}, recall {d.recall:.3f}")

    line("leave one category out", held_out)
    default = {"members": ["ae32", "lstm", "ae64"], "novelty_level": 0.6, "novelty_quiet": 0.25}
    line(f"default {json.dumps(default)} (in-sample)", ensemble_scores(default, files, errors))
    fits = [nab(s).profiles["standard"].score for s in scores]
    best = int(np.argmax(fits))
    line(f"best in-sample {json.dumps(grid[best])}", scores[best])
    print(f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
