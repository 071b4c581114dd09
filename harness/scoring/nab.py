"""NAB v1.1 scoring, exact and vectorised.

The rules (NAB whitepaper, arXiv 1510.03336, and NAB's sweeper):
- the first min(floor(0.15 n), 750) rows of a file are probationary and not scored;
- a detection (score >= threshold) at row i inside a window of W rows ending at row r is worth
  tpWeight * s(-(r-i+1)/W) / s(-1), only the earliest detection of a window counts, a missed window costs
  -fnWeight; a detection outside windows costs fpWeight * s(|prevEnd-i| / (prevW-1)) after a window and
  -fpWeight before the first one; s(x) = 2/(1+exp(5x)) - 1, and -1 for x > 3;
- normalised score = 100 (raw - null) / (perfect - null), null = no detection, perfect = tpWeight x windows.

Every threshold is evaluated at once: the post-probation rows of all files are sorted by score once, and each
row's contribution to the total is placed at its rank, so the raw score at any threshold is a cumulative sum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from harness.corpus.layout import SeriesFile
from harness.scoring.profiles import NAB_PROFILES, Profile
from harness.scoring.ranges import range_scores

PROBATION_PERCENT = 0.15
WINDOW_SHARE = 0.10  # NAB's windows cover 10% of a file, split evenly between its anomalies
NO_DETECTION_THRESHOLD = 1.1  # NAB's sweep starts here: "above every score"


def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        val = 2.0 / (1.0 + np.exp(5.0 * np.asarray(x, dtype=np.float64))) - 1.0
    return np.where(x > 3.0, -1.0, val)


MAX_TP = float(scaled_sigmoid(np.array(-1.0)))


def probation_rows(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    return int(min(math.floor(percent * n_rows), percent * 5000))


@dataclass
class ProfileScore:
    """One cost profile's result. tp/fn count windows; fp counts false-positive detections (rows)."""

    score: float
    raw: float
    threshold: float
    tp: int
    fp: int
    fn: int


@dataclass
class DetectionMetrics:
    """Window-level detection quality at one threshold (definitions in docs/metrics.md)."""

    threshold: float
    recall: float
    precision: float
    f1: float
    detected_windows: int
    windows: int
    fp_events: int
    latency_mean_rows: float
    latency_median_rows: float
    latency_mean_s: float
    latency_median_s: float
    range_precision: float  # Tatbul et al. 2018 (harness.scoring.ranges)
    range_recall: float
    range_f1: float


@dataclass
class PRCurve:
    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


@dataclass
class NabReport:
    detector: str
    profiles: dict[str, ProfileScore]
    detection: dict[str, DetectionMetrics]  # keyed by profile name, plus "best_f1"
    pr_curve: PRCurve = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "detector": self.detector,
            "profiles": {k: asdict(v) for k, v in self.profiles.items()},
            "detection": {k: asdict(v) for k, v in self.detection.items()},
        }


@dataclass
class CorpusIndex:
    """What scoring needs from a corpus, independent of any detector: built once, reused for every output.

    Arrays cover the scored (post-probation) rows of all files, concatenated in file and row order.
    """

    files: list[SeriesFile]
    keep: list[np.ndarray]  # per file: mask of scored rows
    gid: np.ndarray  # global window id of each row, -1 outside windows
    tp_u: np.ndarray  # TP value / tpWeight if the row were a window's earliest detection
    fp_u: np.ndarray  # FP value / fpWeight of a detection outside windows (0 inside)
    row: np.ndarray  # row position within its file
    window_file: np.ndarray
    window_start: np.ndarray
    win_rows: np.ndarray  # indices of rows inside windows (window ids ascending)
    first_of_window: np.ndarray  # over win_rows: first row of its window
    adjacent: np.ndarray  # indices j where rows j and j+1 are consecutive rows outside windows of one file, in one block
    file_of: np.ndarray  # file index of each row
    n_windows: int  # windows with at least one scored row
    label_windows: int  # windows in the label file (NAB's perfect score)

    def normalised(self, profile: Profile, raw: float) -> float:
        """NAB's normalised score of a raw score over this corpus: 0 is the null detector, 100 the perfect one.
        Raw scores add up over files, so a raw score summed over parts of the corpus is normalised here too."""
        null = -profile.fn_weight * self.n_windows
        perfect = profile.tp_weight * self.label_windows
        return 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0

    @classmethod
    def build(
        cls, files: Sequence[SeriesFile], probation_percent: float = PROBATION_PERCENT, label_windows: int | None = None
    ) -> "CorpusIndex":
        parts = [_file_rows(f, probation_percent) for f in files]
        counts = [len(f.windows) for f in files]
        win_base = np.cumsum([0] + counts)
        gid = np.concatenate([np.where(p[1] >= 0, p[1] + b, -1) for p, b in zip(parts, win_base)] or [np.zeros(0, np.int64)])
        row = np.concatenate([p[4] for p in parts] or [np.zeros(0, np.int64)])
        file_of = np.repeat(np.arange(len(files)), [len(p[4]) for p in parts])
        block = np.concatenate([p[5] for p in parts] or [np.zeros(0, np.int64)])
        outside = gid < 0
        win_rows = np.flatnonzero(~outside)
        g = gid[win_rows]
        return cls(
            files=list(files),
            keep=[p[0] for p in parts],
            gid=gid,
            tp_u=np.concatenate([p[2] for p in parts] or [np.zeros(0)]),
            fp_u=np.concatenate([np.where(p[1] >= 0, 0.0, p[3]) for p in parts] or [np.zeros(0)]),
            row=row,
            window_file=np.repeat(np.arange(len(files)), counts),
            window_start=np.concatenate([f.windows[:, 0] for f in files] or [np.zeros(0, np.int64)]),
            win_rows=win_rows,
            first_of_window=np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, bool),
            adjacent=np.flatnonzero(
                outside[1:] & outside[:-1] & (file_of[1:] == file_of[:-1]) & (np.diff(row) == 1) & (block[1:] == block[:-1])
            ),
            file_of=file_of,
            n_windows=len(np.unique(g)),
            label_windows=int(win_base[-1]) if label_windows is None else label_windows,
        )


def alert_block_rows(f: SeriesFile) -> int:
    """The longest a false-positive alert event may last: the file's window length (NAB sizes windows at 10% of
    a file split between its anomalies), or 10% of the file when it has no window."""
    if len(f.windows):
        return int((f.windows[:, 1] - f.windows[:, 0] + 1).max())
    return max(1, int(WINDOW_SHARE * f.n_rows))


def _file_rows(f: SeriesFile, probation_percent: float):
    n = f.n_rows
    i = np.arange(n)
    gid = np.full(n, -1, dtype=np.int64)
    tp_u = np.zeros(n)
    fp_u = np.full(n, -1.0)  # before the first window
    first = probation_rows(n, probation_percent)
    segment = np.full(n, first)  # first row of the stretch outside windows that each row lies in
    for j, (start, end) in enumerate(f.windows):
        width = float(end - start + 1)
        inside = slice(start, end + 1)
        gid[inside] = j
        tp_u[inside] = scaled_sigmoid(-(end - i[inside] + 1) / width) / MAX_TP
        nxt = f.windows[j + 1, 0] if j + 1 < len(f.windows) else n
        after = slice(end + 1, nxt)
        fp_u[after] = scaled_sigmoid(np.abs(end - i[after]) / max(width - 1.0, 1e-12))
        segment[after] = max(end + 1, first)
    keep = i >= first
    block = (i - segment) // alert_block_rows(f)  # alert events are cut into blocks of a window's length
    return keep, gid[keep], tp_u[keep], fp_u[keep], i[keep], block[keep]


class NabSweep:
    """One detector's output over a corpus, prepared so that any threshold scores in O(1)."""

    def __init__(self, index: CorpusIndex, scores: Sequence[np.ndarray]):
        for f, s in zip(index.files, scores):
            if len(s) != f.n_rows:
                raise ValueError(f"{f.name}: {len(s)} scores for {f.n_rows} rows")
        self.index = index
        self.n_windows = index.n_windows
        self._detections: dict[int, DetectionMetrics] = {}
        score = np.concatenate([np.asarray(s, dtype=np.float64)[k] for s, k in zip(scores, index.keep)] or [np.zeros(0)])
        self.score = score
        n = len(score)
        # Descending. Ties need no order (thresholds are read at the end of a tie); "stable" is timsort, which
        # exploits the runs that time-series scores are full of: 4x faster than quicksort on NAB outputs.
        order = np.argsort(score, kind="stable")[::-1]
        self.order = order  # order[k]: the row at rank k
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        self.sorted_scores = score[order]
        outside = index.gid < 0
        self.cum_fp_u = np.cumsum(index.fp_u[order])
        self.cum_fp_rows = np.cumsum(outside[order])

        # Windows: a row changes its window's value only when it becomes the window's earliest detection, i.e.
        # when its rank is below the ranks of all earlier rows of that window (a running minimum per window).
        w = index.win_rows
        g = index.gid[w]
        big = n + 1
        keyed = rank[w] - g * big  # later windows get smaller keys, so the running minimum restarts per window
        run_min = np.minimum.accumulate(keyed) if len(w) else keyed
        prev_min = np.r_[big, run_min[:-1]] if len(w) else run_min
        record = index.first_of_window | (keyed < prev_min)
        rec = w[record]
        rec_g = g[record]
        # Records of a window enter in reverse row order; each replaces the next record's (later) row.
        nxt_same = np.r_[rec_g[1:] == rec_g[:-1], False] if len(rec) else np.zeros(0, bool)
        rec_tp = index.tp_u[rec]
        delta_tp = rec_tp - np.where(nxt_same, np.r_[rec_tp[1:], 0.0], 0.0) if len(rec) else rec_tp
        tp_at = np.zeros(n)
        tp_at[rank[rec]] = delta_tp
        first_at = np.zeros(n, dtype=np.int64)
        first_at[rank[rec[~nxt_same]]] = 1
        self.cum_tp_u = np.cumsum(tp_at)
        self.cum_detected = np.cumsum(first_at)

        # False-positive events: a run of consecutive detections outside windows. Events at a threshold =
        # detections outside windows - adjacent pairs of them, and a pair becomes detected at its larger rank.
        adj = index.adjacent
        pair_rank = np.maximum(rank[adj], rank[adj + 1])
        self.cum_fp_pairs = np.cumsum(np.bincount(pair_rank, minlength=n)[:n]) if n else np.zeros(0, np.int64)

        # Candidate thresholds: the last rank of each run of equal scores.
        s = self.sorted_scores
        self.candidates = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if n else np.zeros(0, np.int64)

    # --- thresholds -------------------------------------------------------------------------------------
    def rank_for(self, threshold: float) -> int:
        """Index of the last sorted row with score >= threshold (-1: no detection)."""
        return int(np.searchsorted(-self.sorted_scores, -threshold, side="right")) - 1

    def threshold_at(self, k: int) -> float:
        if k >= 0:
            return float(self.sorted_scores[k])
        top = float(self.sorted_scores[0]) if len(self.sorted_scores) else 0.0
        return NO_DETECTION_THRESHOLD if top < NO_DETECTION_THRESHOLD else float(np.nextafter(top, np.inf))

    def raw(self, profile: Profile, k: np.ndarray | int) -> np.ndarray:
        k = np.asarray(k)
        safe = np.maximum(k, 0)
        on = k >= 0
        detected = np.where(on, self.cum_detected[safe] if len(self.score) else 0, 0)
        fp_u = np.where(on, self.cum_fp_u[safe] if len(self.score) else 0.0, 0.0)
        tp_u = np.where(on, self.cum_tp_u[safe] if len(self.score) else 0.0, 0.0)
        return (
            -profile.fn_weight * self.n_windows
            + profile.fn_weight * detected
            + profile.tp_weight * tp_u
            + profile.fp_weight * fp_u
        )

    def optimize(self, profile: Profile) -> int:
        """The rank of the best threshold over every distinct score and "no detection"; ties go to the highest."""
        ks = np.r_[-1, self.candidates]
        return int(ks[int(np.argmax(self.raw(profile, ks)))])

    def profile_score(self, profile: Profile, k: int, threshold: float | None = None) -> ProfileScore:
        raw = float(self.raw(profile, k))
        score = self.index.normalised(profile, raw)
        detected = int(self.cum_detected[k]) if k >= 0 else 0
        return ProfileScore(
            score=score,
            raw=raw,
            threshold=self.threshold_at(k) if threshold is None else threshold,
            tp=detected,
            fp=int(self.cum_fp_rows[k]) if k >= 0 else 0,
            fn=self.n_windows - detected,
        )

    def best_without(self, groups: Sequence[int] | np.ndarray, profiles: Sequence[Profile] = NAB_PROFILES) -> np.ndarray:
        """Leave one group out, for every group at once: element [g, j] is profile j's normalised score at its
        optimised threshold over the corpus without group g's files, exactly what scoring those files alone
        gives. `groups` holds a group number (0, 1, ...) per file.

        Why: choosing settings on the other folds means scoring hundreds of outputs per fold; a fresh sweep per
        fold sorts the corpus again each time. Here a group's rows change the total only at their own ranks, so
        between two of them the subset's best is a range maximum of the whole corpus's curve (one
        `maximum.reduceat` per group and profile).
        """
        ix = self.index
        groups = np.asarray(groups, dtype=np.int64)
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        ks = np.r_[-1, self.candidates]
        at = 1 + np.searchsorted(self.candidates, np.arange(len(self.score)), side="left")  # first ks index counting a rank
        rank_group = groups[ix.file_of[self.order]] if len(self.score) else np.zeros(0, np.int64)
        by_group = np.argsort(rank_group, kind="stable")  # group-major, ranks ascending within a group
        cuts = np.searchsorted(rank_group[by_group], np.arange(n_groups + 1))
        detected = np.diff(self.cum_detected, prepend=0)
        tp_u = np.diff(self.cum_tp_u, prepend=0.0)
        fp_u = ix.fp_u[self.order] if len(self.score) else np.zeros(0)
        scored = np.unique(ix.gid[ix.gid >= 0])
        scored_windows = np.bincount(groups[ix.window_file[scored]], minlength=n_groups)
        label_windows = np.bincount(groups[ix.window_file], minlength=n_groups)
        out = np.zeros((n_groups, len(profiles)))
        for j, p in enumerate(profiles):
            gain = self.raw(p, ks) + p.fn_weight * self.n_windows  # the corpus's raw score less its null score
            contribution = p.fn_weight * detected + p.tp_weight * tp_u + p.fp_weight * fp_u
            for g in range(n_groups):
                mine = by_group[cuts[g] : cuts[g + 1]]
                starts, first = np.unique(at[mine], return_index=True)
                part = np.r_[0.0, np.cumsum(np.add.reduceat(contribution[mine], first))] if len(mine) else np.zeros(1)
                best = float(np.max(np.maximum.reduceat(gain, np.r_[0, starts]) - part))
                null = -p.fn_weight * (self.n_windows - scored_windows[g])
                perfect = p.tp_weight * (ix.label_windows - label_windows[g])
                out[g, j] = 100.0 * best / (perfect - null) if perfect != null else 0.0  # (raw - null) / (perfect - null)
        return out

    # --- beyond NAB ---------------------------------------------------------------------------------------
    def _counts(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        safe = np.maximum(ks, 0)
        on = ks >= 0
        if not len(self.score):
            return np.zeros(len(ks), np.int64), np.zeros(len(ks), np.int64)
        detected = np.where(on, self.cum_detected[safe], 0)
        events = np.where(on, self.cum_fp_rows[safe] - self.cum_fp_pairs[safe], 0)
        return detected, events

    def _prf(self, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        detected, events = self._counts(ks)
        alerts = detected + events
        precision = np.divide(detected, alerts, out=np.zeros(len(ks)), where=alerts > 0)
        recall = detected / self.n_windows if self.n_windows else np.zeros(len(ks))
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros(len(ks)), where=denom > 0)
        return precision, recall, f1

    def pr_curve(self) -> PRCurve:
        ks = self.candidates
        precision, recall, _ = self._prf(ks)
        return PRCurve(self.sorted_scores[ks] if len(ks) else np.zeros(0), precision, recall)

    def best_f1_rank(self) -> int:
        ks = np.r_[-1, self.candidates]
        return int(ks[int(np.argmax(self._prf(ks)[2]))])

    def detection(self, k: int) -> DetectionMetrics:
        """The detection metrics with the top k + 1 rows flagged (profiles often share a threshold: kept)."""
        if k not in self._detections:
            self._detections[k] = self._detection(k)
        return self._detections[k]

    def _detection(self, k: int) -> DetectionMetrics:
        ks = np.array([k])
        precision, recall, f1 = (float(a[0]) for a in self._prf(ks))
        detected, events = (int(a[0]) for a in self._counts(ks))
        rows, secs = self._latencies(k)
        ix = self.index
        ranges = range_scores(ix.gid, ix.file_of, ix.row, self.score >= self.threshold_at(k))
        return DetectionMetrics(
            threshold=self.threshold_at(k),
            recall=recall,
            precision=precision,
            f1=f1,
            detected_windows=detected,
            windows=self.n_windows,
            fp_events=events,
            latency_mean_rows=_mean(rows),
            latency_median_rows=_median(rows),
            latency_mean_s=_mean(secs),
            latency_median_s=_median(secs),
            range_precision=ranges.precision,
            range_recall=ranges.recall,
            range_f1=ranges.f1,
        )

    def _latencies(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and seconds from each detected window's first row to its first detection."""
        if k < 0:
            return np.zeros(0), np.zeros(0)
        ix = self.index
        w = ix.win_rows
        hit = w[self.score[w] >= self.sorted_scores[k]]
        g, first = np.unique(ix.gid[hit], return_index=True)
        rows = ix.row[hit[first]]
        starts = ix.window_start[g]
        lat_rows = (rows - starts).astype(np.float64)
        secs = np.full(len(g), np.nan)
        for j, (wg, r, s0) in enumerate(zip(g, rows, starts)):
            detected_at, started_at = ix.files[ix.window_file[wg]].timestamps_at([r, s0])
            secs[j] = (detected_at - started_at) / np.timedelta64(1, "s")
        return lat_rows, secs


def _mean(a: np.ndarray) -> float:
    a = a[~np.isnan(a)]
    return float(a.mean()) if len(a) else float("nan")


def _median(a: np.ndarray) -> float:
    a = a[~np.isnan(a)]
    return float(np.median(a)) if len(a) else float("nan")


def score_detector(
    files: Sequence[SeriesFile] | CorpusIndex,
    scores: Sequence[np.ndarray],
    detector: str = "detector",
    thresholds: dict[str, float] | None = None,
    profiles: Sequence[Profile] = NAB_PROFILES,
    probation_percent: float = PROBATION_PERCENT,
    label_windows: int | None = None,
) -> NabReport:
    """Score one detector's output: given thresholds per profile, or optimized ones when `thresholds` is None.

    Pass a prebuilt CorpusIndex to score many outputs over one corpus without re-deriving its windows.
    """
    index = files if isinstance(files, CorpusIndex) else CorpusIndex.build(files, probation_percent, label_windows)
    sweep = NabSweep(index, scores)
    results: dict[str, ProfileScore] = {}
    detection: dict[str, DetectionMetrics] = {}
    for p in profiles:
        if thresholds is None:
            k = sweep.optimize(p)
            results[p.name] = sweep.profile_score(p, k)
        else:
            k = sweep.rank_for(thresholds[p.name])
            results[p.name] = sweep.profile_score(p, k, thresholds[p.name])
        detection[p.name] = sweep.detection(k)
    detection["best_f1"] = sweep.detection(sweep.best_f1_rank())
    return NabReport(detector=detector, profiles=results, detection=detection, pr_curve=sweep.pr_curve())
