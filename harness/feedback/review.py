"""A run's review loop (docs/thresholds.md, "The feedback loop"): its review log, verdicts from a simulated
reviewer or from Label Studio, and what a feedback policy does to NAB score and false alarms, against no
feedback and as a function of the reviewers' delay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from harness.corpus.layout import Corpus, SeriesFile, load_corpus
from harness.errors import InputError
from harness.feedback.log import build_entries, verdicts_of
from harness.feedback.loop import (
    ALERT,
    NOBODY,
    FeedbackThreshold,
    LabelReviewer,
    LogReviewer,
    Reviewer,
)
from harness.results.folder import RunFolder
from harness.results.review_log import Entry, seconds_of, stamp
from harness.results.schema import CellResult, Status
from harness.scoring.nab import alert_block_rows, probation_rows
from harness.scoring.profiles import REFERENCE_PROFILE
from harness.thresholds.evaluate import event_seconds, score_alerts

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
POLICY = "nab_standard"  # the log's alerts: each cell's threshold at NAB's standard profile


def parse_delay(text: str) -> float:
    """'0', '90s', '30m', '6h', '1d', '2w' -> seconds of event time; ValueError naming the form otherwise."""
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise ValueError(f"expected a duration like 0, 30m, 6h, 1d or 2w, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def delay_text(seconds: float) -> str:
    """The shortest spelling parse_delay reads back: 0, 90s, 30m, 6h, 1d, 2w."""
    for unit in "wdhm":
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s" if seconds else "0"


@dataclass
class Reviewable:
    """An ok cell of a run, with what the review loop needs of it."""

    id: str
    detector: str
    threshold: float
    probation_percent: float
    scores: list[np.ndarray]


def reviewable(folder: RunFolder, results: list[CellResult]) -> list[Reviewable]:
    out = []
    for r in results:
        score = r.score
        if r.status != Status.OK or score is None:
            continue
        scores = folder.scores(r.cell.id)
        if scores is not None:
            out.append(Reviewable(r.cell.id, r.cell.detector, score.nab.profiles[REFERENCE_PROFILE].threshold, score.probation_percent, scores))
    return out


def build_log(cells: list[Reviewable], corpus: Corpus) -> list[Entry]:
    return [e for c in cells for e in build_entries(c.id, c.detector, POLICY, c.threshold, corpus.files, c.scores, c.probation_percent)]


@dataclass
class ReviewRun:
    folder: RunFolder
    corpus: Corpus
    cells: list[Reviewable]


def open_run(path: str | Path) -> ReviewRun:
    """A finished run folder with its corpus (read again from where the run read it, and checked to be the
    same data); one InputError line otherwise."""
    folder = RunFolder(path)
    manifest, results = folder.read_run()
    root = manifest.corpus.get("root")
    if not root or not Path(root).is_dir():
        raise InputError(f"the run's corpus is no longer at {root}", folder.manifest_file)
    corpus = load_corpus(root, only=manifest.corpus.get("only") or ())
    if corpus.fingerprint != manifest.corpus.get("fingerprint"):
        raise InputError(f"the corpus at {root} is not the one this run scored (its data or labels changed)", folder.manifest_file)
    cells = reviewable(folder, results)
    if not cells:
        raise InputError("no ok cell with scores to review", Path(path))
    return ReviewRun(folder, corpus, cells)


def label_studio_tasks(run: ReviewRun, entries: list[Entry], context: int) -> list[dict]:
    """The unjudged entries as Label Studio tasks, each with the stream around it (harness.feedback.labelstudio)."""
    from harness.feedback.labelstudio import tasks

    return tasks(entries, run.corpus.files, {c.id: c.scores for c in run.cells}, context)


def read_log(run: ReviewRun) -> list[Entry]:
    entries = run.folder.read_review()
    if entries is None:
        raise InputError("no review/log.csv: a run writes it when it ends (rerun, or --resume the run)", run.folder.root)
    return entries


def simulate(run: ReviewRun, entries: list[Entry], delay_s: float, error_rate: float, seed: int = 0, replace: bool = False) -> int:
    """Verdicts from the labels for the unjudged entries (all of them with `replace`), each arriving `delay_s`
    of event time after its alert (or after its missed window ends), wrong with probability `error_rate`."""
    rng = np.random.default_rng(seed)
    files = {f.name: f for f in run.corpus.files}
    name = f"simulated (delay {delay_text(delay_s)}, error rate {error_rate:g}, seed {seed})"
    done = 0
    for e in entries:
        if e.judged and not replace:
            continue
        f = files[e.stream]
        reviewer = LabelReviewer(event_seconds(f), f.windows, delay_s, error_rate, rng)
        v = reviewer.alert(e.first_row) if e.kind == ALERT else reviewer.closed(e.last_row, -1)
        assert v is not None, f"{e.id}: a missed window the labels do not have"
        e.verdict, e.verdict_at, e.reviewer = ("anomaly" if v.anomaly else "normal"), stamp(v.arrives), name
        done += 1
    return done


def import_verdicts(entries: list[Entry], verdicts: dict[str, str], delay_s: float, source: str) -> tuple[int, list[str]]:
    """People's verdicts (Label Studio's) into the log; each may be used `delay_s` of event time after its alert.
    Returns how many were set, and the ids the log does not have."""
    by_id = {e.id: e for e in entries}
    unknown = [rid for rid in verdicts if rid not in by_id]
    for rid, verdict in verdicts.items():
        e = by_id.get(rid)
        if e is not None:
            start = e.time if e.kind == ALERT else e.end_time
            e.verdict, e.verdict_at, e.reviewer = verdict, stamp(seconds_of(start, e.id) + delay_s), source
    return len(verdicts) - len(unknown), unknown


def _scored(run: ReviewRun, cell: Reviewable, policy: FeedbackThreshold, reviewer_of: Callable[[SeriesFile], Reviewer]) -> dict:
    """The policy over every file of the corpus, each with its reviewer, scored by NAB at the standard profile."""
    files = run.corpus.files
    alerted = [policy.apply(event_seconds(f), s, reviewer_of(f), alert_block_rows(f), probation_rows(f.n_rows, cell.probation_percent))
               for f, s in zip(files, cell.scores)]
    rep = score_alerts(files, alerted, label_windows=run.corpus.label_windows, probation_percent=cell.probation_percent)
    d = rep.detection[REFERENCE_PROFILE]
    return {"nab_standard": rep.profiles[REFERENCE_PROFILE].score, "fp_events": d.fp_events, "detected_windows": d.detected_windows,
            "windows": d.windows, "precision": d.precision, "recall": d.recall}


def evaluate(run: ReviewRun, policy: dict, delays: list[float], error_rate: float, seed: int = 0,
             entries: list[Entry] | None = None) -> list[dict]:
    """Per cell: NAB standard, FP events and detected windows without feedback, with the log's verdicts (when it
    has some) and with a simulated reviewer at each delay. `policy`: FeedbackThreshold's settings but the
    threshold (each cell's own)."""
    rows = []
    for c in run.cells:
        fb = FeedbackThreshold(threshold=c.threshold, **policy)
        base = _scored(run, c, fb, lambda f: NOBODY)
        runs = [("none", "", base)]
        mine = [e for e in entries or [] if e.cell == c.id and e.judged]
        if mine:
            runs.append((f"review log ({len(mine)} verdicts)", "", _scored(run, c, fb, partial(_replay, mine))))
        for delay in delays:
            simulated = partial(_simulated, delay=delay, error_rate=error_rate, rng=np.random.default_rng(seed))
            runs.append((f"simulated (error rate {error_rate:g})", delay_text(delay), _scored(run, c, fb, simulated)))
        for feedback, delay, figures in runs:
            change = 100.0 * (figures["fp_events"] - base["fp_events"]) / base["fp_events"] if base["fp_events"] else 0.0
            rows.append({"cell": c.id, "feedback": feedback, "delay": delay, **figures,
                         "nab_delta": figures["nab_standard"] - base["nab_standard"], "fp_events_change_pct": change})
    return rows


def _replay(entries: list[Entry], f: SeriesFile) -> Reviewer:
    return LogReviewer(verdicts_of(entries, f.name))


def _simulated(f: SeriesFile, delay: float, error_rate: float, rng: np.random.Generator) -> Reviewer:
    return LabelReviewer(event_seconds(f), f.windows, delay, error_rate, rng)
