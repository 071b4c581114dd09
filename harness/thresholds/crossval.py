"""The honest NAB number: each file scored at a threshold chosen on *other* files.

NAB's own number optimises one threshold per profile on the very labels it is then judged on, which flatters
every detector. Here the corpus is cut into folds by category (all of realKnownCause in one fold, and so on);
each fold's files are scored at the threshold that is best on the other folds. NAB's raw score adds up over
files, so the folds' raw scores sum to a corpus score, normalised exactly as NAB normalises (null and perfect
over the whole corpus). The gap to the optimised (oracle) score is what fitting the threshold to the answers
was worth. (Folds may each get their own threshold, so the cross-validated score can, rarely, beat the oracle's
single one.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.corpus.layout import SeriesFile
from harness.scoring.nab import PROBATION_PERCENT, CorpusIndex, NabReport, NabSweep, score_detector
from harness.scoring.profiles import NAB_PROFILES, Profile


@dataclass
class CrossValidated:
    profile: str
    oracle: float  # NAB's score, threshold optimised on every file
    cross_validated: float  # each fold at the threshold optimised on the other folds
    folds: dict[str, float] = field(default_factory=dict)  # fold -> the threshold its files were scored at

    @property
    def gap(self) -> float:
        return self.oracle - self.cross_validated


def category(f: SeriesFile) -> str:
    return f.name.split("/", 1)[0]


def cross_validate(files: Sequence[SeriesFile], scores: Sequence[np.ndarray], profiles: Sequence[Profile] = NAB_PROFILES,
                   probation_percent: float = PROBATION_PERCENT, label_windows: int | None = None,
                   fold_of=category) -> dict[str, CrossValidated]:
    """Per profile: the oracle score, the cross-validated score and the fold plan (fold -> threshold)."""
    folds = sorted({fold_of(f) for f in files})
    if len(folds) < 2:
        raise ValueError("cross-validation by file needs files of at least two folds (categories)")
    whole = NabSweep(CorpusIndex.build(files, probation_percent, label_windows), scores)
    members = {g: [i for i, f in enumerate(files) if fold_of(f) == g] for g in folds}
    sweeps = {}
    for g in folds:
        test = members[g]
        train = [i for i, f in enumerate(files) if fold_of(f) != g]
        sweeps[g] = (NabSweep(CorpusIndex.build([files[i] for i in train], probation_percent), [scores[i] for i in train]),
                     NabSweep(CorpusIndex.build([files[i] for i in test], probation_percent), [scores[i] for i in test]))
    out = {}
    for p in profiles:
        raw, plan = 0.0, {}
        for g, (train, test) in sweeps.items():
            threshold = train.threshold_at(train.optimize(p))
            plan[g] = threshold
            raw += float(test.raw(p, test.rank_for(threshold)))
        out[p.name] = CrossValidated(p.name, whole.profile_score(p, whole.optimize(p)).score, whole.index.normalised(p, raw), plan)
    return out


def score_like_a_cell(files: Sequence[SeriesFile], scores: Sequence[np.ndarray], detector: str,
                      thresholds: dict[str, float] | None, profiles: Sequence[Profile], probation_percent: float,
                      label_windows: int | None, index: CorpusIndex | None = None) -> tuple[NabReport, dict[str, CrossValidated] | None]:
    """A detector's scores judged as a run judges a cell, so a run's cells and anything set beside them (the
    leaderboard's re-scored published detectors) are scored alike: NAB's report (the given thresholds, or
    optimised ones), and, when the thresholds are optimised over at least two categories, the cross-validated
    score beside it (None otherwise). `index`: the files' prebuilt CorpusIndex, to score many detectors faster."""
    report = score_detector(index or files, scores, detector, thresholds, profiles, probation_percent, label_windows)
    cv = None
    if thresholds is None and len({category(f) for f in files}) >= 2:
        cv = cross_validate(files, scores, profiles, probation_percent, label_windows)
    return report, cv
