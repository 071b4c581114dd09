"""NAB's published detectors, scored like a run's cells: the scoreboard NAB ships and the detectors whose raw
outputs sit in a corpus's `results/<name>/` folders, re-scored on the same files, profiles, probation and
threshold policy as the cells they are ranked beside."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import InputError
from harness.scoring.profiles import REFERENCE_PROFILE, Profile, load_thresholds

if TYPE_CHECKING:
    from harness.corpus.layout import Corpus
    from harness.scoring.nab import NabReport
    from harness.thresholds.crossval import CrossValidated


@dataclass(frozen=True)
class Rescored:
    """One published detector's NAB report on the run's files, and its cross-validated scores (None: not run)."""

    name: str
    report: "NabReport"
    cross_validated: "dict[str, CrossValidated] | None"

    @property
    def standard_cv(self) -> float | None:
        cv = self.cross_validated
        return cv[REFERENCE_PROFILE].cross_validated if cv and REFERENCE_PROFILE in cv else None


def published_scoreboard(corpus_root: Path) -> dict[str, dict[str, float]] | None:
    """NAB's published scoreboard (`results/final_results.json`, whole corpus only), or None without one."""
    path = corpus_root / "results" / "final_results.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def rescore_published(corpus: "Corpus", profiles: tuple[Profile, ...], probation_percent: float,
                      thresholds_file: str | Path | None) -> tuple[list[Rescored], list[str]]:
    """Every detector with raw outputs in the corpus's results/ folder, scored like the run's cells (thresholds
    from `thresholds_file` where it names the detector, else optimised), with notes on what was not."""
    from harness.scoring.nab import CorpusIndex
    from harness.scoring.results_layout import read_results_dir
    from harness.thresholds.crossval import score_like_a_cell

    assert corpus.root is not None
    results = corpus.root / "results"
    if not results.is_dir():
        return [], []
    rescored, notes = [], []
    index = None
    for folder in sorted(d for d in results.iterdir() if d.is_dir()):
        try:
            name, scores = read_results_dir(folder, corpus)
        except InputError as exc:
            notes.append(f"{folder.name}: not re-scored ({exc})")
            continue
        thresholds = None
        if thresholds_file is not None:
            try:
                thresholds = load_thresholds(thresholds_file, name, profiles)
            except InputError:
                notes.append(f"{name}: the scenario's thresholds file has no entry for it; its thresholds are optimised")
        index = index or CorpusIndex.build(corpus.files, probation_percent, corpus.label_windows)
        report, cv = score_like_a_cell(corpus.files, scores, name, thresholds, profiles, probation_percent,
                                       corpus.label_windows, index)
        rescored.append(Rescored(name, report, cv))
    if rescored:
        policy = "optimised per profile" if thresholds_file is None else "from the scenario's thresholds file"
        notes.append(f"NAB raw outputs, re-scored: each detector in {results} scored here, thresholds {policy}, "
                     "on the same files and probation as this run.")
    return rescored, notes
