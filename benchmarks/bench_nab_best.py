"""The ensemble detector on NAB, with its settings chosen without looking at the files being scored.

    python benchmarks/bench_nab_best.py            # about 9 min on 2 cores
    python benchmarks/bench_nab_best.py --seed 1   # the same with every member trained at another seed

Protocols (docs/detectors.md):
1. Every candidate member (autoencoders of windows 8, 32, 64 and the LSTM, each with its defaults) runs once
   over the corpus; its per-row errors are kept. A member's errors do not depend on the other members.
2. The grid: every set of 2-4 candidate members x the members' likelihood quantile {0.995, 0.997, 0.998} x
   novelty {off, 0.6, 0.65} x seasonal deviation {off, 1 day, 3 days; quantile 0.998} x final suppression
   {off, 0.5} x pattern novelty {off, 8 bins}: 1188 settings. Each setting's scores are computed for every
   file by the ensemble's own code (`scores_from_errors`, `combined`) from the cached errors.
3. Folds: a NAB category (leave one category out, 7 folds) or a file (leave one file out, 58 folds). For each
   fold, the setting that is best on the *other* folds is chosen, by one of two criteria fixed in advance:
   the NAB standard score (optimised threshold), or the mean of the three profiles' scores (which also
   rewards precision, as the low-FP profile does). The fold's files get that setting's scores. No file's
   score comes from a setting chosen with that file in view.
4. The 58 files' held-out scores are scored together as NAB scores a detector: threshold optimised per
   profile, all three profiles, and F1 at the standard threshold.

It also prints the default setting (`harness/detectors/ensemble.py`, chosen in-sample on the whole corpus), the
best settings in-sample, and the default's neighbours (one parameter changed), for comparison. The member
defaults themselves were set on NAB in earlier issues.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learned_nab import score_corpus  # noqa: E402

CANDIDATES = {
    "ae8": ("autoencoder", {"window": 8}),
    "ae32": ("autoencoder", {}),
    "ae64": ("autoencoder", {"window": 64}),
    "lstm": ("lstm", {}),
}
NOVELTY = ({"novelty_level": 0.0}, {"novelty_level": 0.6}, {"novelty_level": 0.65})
SEASONAL = ({"seasonal_days": 0}, {"seasonal_days": 1, "seasonal_quantile": 0.998},
            {"seasonal_days": 3, "seasonal_quantile": 0.998})
FINAL = ({"final_suppress": 0.0}, {"final_suppress": 0.5})
PATTERN = ({"pattern_bins": 0}, {"pattern_bins": 8})
QUANTILE = ({"quantile": 0.995}, {"quantile": 0.997}, {"quantile": 0.998})
DEFAULT = {"members": ["ae64", "lstm"], "quantile": 0.998, "novelty_level": 0.6, "seasonal_days": 3,
           "seasonal_quantile": 0.998, "final_suppress": 0.5, "pattern_bins": 8}
NEIGHBOURS = {"final_suppress": (0.3, 0.75, 1.0), "novelty_quiet": (0.1, 0.5, 1.0), "seasonal_days": (2, 4, 5),
              "seasonal_quantile": (0.997, 0.999), "novelty_level": (0.58, 0.62), "pattern_bins": (6, 10),
              "pattern_length": (2, 4), "pattern_quantile": (0.997, 0.999)}

_FILES: list = []
_ERRORS: dict = {}


def settings() -> list[dict]:
    return [{"members": list(names), **q, **nov, **sea, **fin, **pat}
            for n in (2, 3, 4) for names in itertools.combinations(CANDIDATES, n)
            for nov in NOVELTY for sea in SEASONAL for fin in FINAL for q in QUANTILE for pat in PATTERN]


def ensemble_scores(setting: dict) -> list[np.ndarray]:
    """One setting's scores of every file, from the cached members' errors (set by `main` before forking)."""
    from harness.detectors.ensemble import Ensemble
    from harness.scoring.nab import probation_rows

    members = [{"type": CANDIDATES[n][0], "params": CANDIDATES[n][1]} for n in setting["members"]]
    ens = Ensemble(**{**setting, "members": members})
    out = []
    for f in _FILES:
        P = probation_rows(f.n_rows)
        err = np.column_stack([_ERRORS[n][f.name] for n in setting["members"]])
        out.append(ens.combined(ens.scores_from_errors(err, P, f.n_rows), f, P))
    return out


PROTOCOLS = ("category", "file")
CRITERIA = {"NAB standard": lambda fit: fit[..., 0], "mean of the three profiles": lambda fit: fit.mean(axis=-1)}
_INDEX: list = []  # the corpus's CorpusIndex (set by `main` before forking)
_GROUPS: dict[str, np.ndarray] = {}  # protocol -> fold number of each file


def fits(setting: dict) -> dict[str, np.ndarray]:
    """One setting's normalised profile scores: on the whole corpus ("all", shape (3,)) and, per protocol, on
    every fold's complement (shape (folds, 3))."""
    from harness.scoring.nab import NabSweep
    from harness.scoring.profiles import NAB_PROFILES

    sweep = NabSweep(_INDEX[0], ensemble_scores(setting))
    whole = np.array([sweep.profile_score(p, sweep.optimize(p)).score for p in NAB_PROFILES])
    return {"all": whole, **{p: sweep.best_without(_GROUPS[p]) for p in PROTOCOLS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.environ.get("HARNESS_NAB") or str(Path(__file__).resolve().parents[1] / "data" / "nab"),
                    help="NAB v1.1 (harness nab fetch data/nab); default $HARNESS_NAB, else data/nab")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0, help="the members' training seed (the defaults were set at 0)")
    args = ap.parse_args()

    from harness.corpus.layout import load_corpus
    from harness.scoring.nab import CorpusIndex, score_detector
    from harness.scoring.profiles import REFERENCE_PROFILE
    from harness.thresholds.crossval import category

    corpus = load_corpus(args.corpus)
    files = corpus.files
    _FILES[:] = files
    _INDEX[:] = [CorpusIndex.build(files, label_windows=corpus.label_windows)]
    cats = sorted({category(f) for f in files})
    _GROUPS.update({"category": np.array([cats.index(category(f)) for f in files]), "file": np.arange(len(files))})
    started = time.perf_counter()
    for name, (kind, params) in CANDIDATES.items():
        _, _ERRORS[name], _ = score_corpus(kind, {**params, "seed": args.seed}, files, args.workers)
    print(f"members' errors (seed {args.seed}): {time.perf_counter() - started:.0f} s")

    grid = settings()
    with get_context("fork").Pool(args.workers) as pool:
        table = pool.map(fits, grid, chunksize=4)
    print(f"{len(grid)} settings scored: {time.perf_counter() - started:.0f} s")

    def line(label: str, s) -> None:
        r = score_detector(_INDEX[0], s, "ensemble")
        pr, d = r.profiles, r.detection[REFERENCE_PROFILE]
        print(f"{label}: NAB standard {pr[REFERENCE_PROFILE].score:.2f} / low FP {pr['reward_low_FP_rate'].score:.2f} / "
              f"low FN {pr['reward_low_FN_rate'].score:.2f}; at the standard threshold F1 {d.f1:.3f}, "
              f"precision {d.precision:.3f}, recall {d.recall:.3f}, FP events {d.fp_events}")

    for protocol in PROTOCOLS:
        for criterion, rank in CRITERIA.items():
            fold_fits = rank(np.stack([t[protocol] for t in table]))  # (settings, folds)
            chosen = fold_fits.argmax(axis=0)
            by_setting = {b: ensemble_scores(grid[b]) for b in np.unique(chosen)}
            scores = [by_setting[chosen[_GROUPS[protocol][i]]][i] for i in range(len(files))]
            line(f"leave one {protocol} out, chosen by {criterion}", scores)
            for b, n in zip(*np.unique(chosen, return_counts=True)):
                print(f"    {n} of {len(chosen)} folds chose {json.dumps(grid[b])}")
    line(f"default {json.dumps(DEFAULT)} (in-sample)", ensemble_scores(DEFAULT))
    for criterion, rank in CRITERIA.items():
        best = int(np.argmax(rank(np.stack([t["all"] for t in table]))))
        line(f"best in-sample by {criterion}: {json.dumps(grid[best])}", ensemble_scores(grid[best]))
    for key, values in NEIGHBOURS.items():
        for v in values:
            line(f"  default with {key} {v}", ensemble_scores({**DEFAULT, key: v}))
    print(f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
