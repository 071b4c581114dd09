"""Policies judged by NAB: a policy's alerts are scored as binary detections (an alert is a detection), with
NAB's scorer and its detection metrics (F1, precision, recall, latency, FP events), and a policy's parameters
are cross-validated like a threshold: chosen on the other categories' files, applied to each category's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.corpus.layout import SeriesFile
from harness.scoring.nab import (
    PROBATION_PERCENT,
    CorpusIndex,
    NabReport,
    NabSweep,
    score_detector,
)
from harness.scoring.profiles import NAB_PROFILES, Profile
from harness.thresholds.crossval import category
from harness.thresholds.policies import ThresholdPolicy

ALERT = 0.5  # alerts become scores of 1 (alert) and 0: any threshold in (0, 1] reads them back


def event_seconds(f: SeriesFile) -> np.ndarray:
    return np.asarray(f.timestamps, "datetime64[s]").astype(np.float64)


def alerts(policy: ThresholdPolicy, files: Sequence[SeriesFile], scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The policy over every file, each a stream of its own."""
    return [policy.apply(event_seconds(f), np.asarray(s, np.float64)) for f, s in zip(files, scores)]


def score_alerts(files: Sequence[SeriesFile], alerted: Sequence[np.ndarray], profiles: Sequence[Profile] = NAB_PROFILES,
                 label_windows: int | None = None, probation_percent: float = PROBATION_PERCENT) -> NabReport:
    """NAB's scores and detection metrics of binary alerts."""
    binary = [a.astype(np.float64) for a in alerted]
    return score_detector(files, binary, "alerts", {p.name: ALERT for p in profiles}, profiles, probation_percent, label_windows)


@dataclass
class PolicyCV:
    profile: str
    oracle: float  # the best of the candidates, chosen on every file (as NAB chooses its threshold)
    oracle_policy: str
    cross_validated: float  # each category with the candidate best on the other categories
    folds: dict[str, str] = field(default_factory=dict)  # category -> the candidate it ran with


def cross_validate_policy(files: Sequence[SeriesFile], scores: Sequence[np.ndarray], candidates: Sequence[ThresholdPolicy],
                          profile: Profile = NAB_PROFILES[0], label_windows: int | None = None,
                          probation_percent: float = PROBATION_PERCENT) -> PolicyCV:
    """Choose among `candidates` (a policy's parameter grid, or several policies) without looking at the file
    being scored: per category, the candidate with the best NAB raw score on the other categories."""
    folds = sorted({category(f) for f in files})
    members = {g: [i for i, f in enumerate(files) if category(f) == g] for g in folds}
    # raw score of every candidate on every fold (NAB's raw score adds up over files)
    raw = np.zeros((len(candidates), len(folds)))
    for c, policy in enumerate(candidates):
        alerted = alerts(policy, files, scores)
        for j, g in enumerate(folds):
            idx = members[g]
            sweep = NabSweep(CorpusIndex.build([files[i] for i in idx], probation_percent), [alerted[i].astype(float) for i in idx])
            raw[c, j] = float(sweep.raw(profile, sweep.rank_for(ALERT)))
    index = CorpusIndex.build(files, probation_percent, label_windows)
    totals = raw.sum(axis=1)
    best = int(np.argmax(totals))
    chosen, plan = 0.0, {}
    for j, g in enumerate(folds):
        others = totals - raw[:, j]
        c = int(np.argmax(others))
        plan[g] = repr(candidates[c])
        chosen += raw[c, j]
    return PolicyCV(profile.name, index.normalised(profile, totals[best]), repr(candidates[best]), index.normalised(profile, chosen), plan)
