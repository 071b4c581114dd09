"""A deliberately simple, loop-based re-implementation of NAB v1.1's scoring rules, used as a test oracle.

Written from the rules (NAB whitepaper, arXiv 1510.03336, and NAB's sweeper), not from harness/scoring/nab.py:

- probation: the first min(floor(0.15 n), 750) rows of a file are not scored;
- windows: inclusive (start_row, end_row) pairs, in time order, not overlapping;
- s(x) = 2 / (1 + exp(5x)) - 1, and -1 for x > 3;
- a row i inside a window of W = end - start + 1 rows ending at row r has TP value tpWeight * s(-(r-i+1)/W) / s(-1);
  a row outside windows after a window (prevEnd, prevW) has FP value fpWeight * s(|prevEnd - i| / (prevW - 1));
  a row before the first window of its file has FP value -fpWeight;
- at threshold t a row is a detection if score >= t and it is not probationary; every window with at least one
  non-probationary row is worth the TP value of its earliest detection, or -fnWeight if it has none; every detection
  outside windows adds its FP value; raw = the sum over files;
- normalized = 100 (raw - null) / (perfect - null), null = -fnWeight x (windows with a non-probationary row),
  perfect = tpWeight x (all windows);
- optimize: every distinct non-probationary score is tried as t, plus "no detection"; the best raw wins and ties go
  to the highest threshold.

Beyond NAB (docs/metrics.md):
- an FP event is a run of consecutive detections outside windows, cut into blocks of L rows counted from the start
  of each stretch outside windows (the first scored row, or the row after a window); L is the file's longest
  window, or 10% of the file (at least 1) when it has none;
- range-based precision and recall (Tatbul et al. 2018) with flat bias, reciprocal cardinality, existence weight
  0.5 for recall and 0 for precision, over windows (their scored rows) and runs of consecutive detections.

Everything is O(rows) per threshold on purpose: it is meant to be obviously right, not fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PROBATION_PERCENT = 0.15
PROBATION_CAP = 750


def sigmoid(x: float) -> float:
    if x > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def probation(n_rows: int) -> int:
    return min(math.floor(PROBATION_PERCENT * n_rows), PROBATION_CAP)


@dataclass
class RefFile:
    n_rows: int
    windows: list[tuple[int, int]]  # inclusive (start_row, end_row)
    scores: list[float]


@dataclass
class RefRow:
    """One scored (non-probationary) row."""

    row: int
    score: float
    window: int | None  # index of the window (within its file) the row lies in, None when outside windows
    tp_unit: float  # s(-(r-i+1)/W) / s(-1) inside a window
    fp_unit: float  # s(|prevEnd-i| / (prevW-1)) after a window, -1 before the first one
    block: int  # outside windows: which block of L rows of its stretch the row lies in


@dataclass
class RefResult:
    raw: float
    score: float
    threshold: float | None  # None: "no detection" (a threshold above every score)
    tp: int  # windows detected
    fp: int  # detections outside windows (rows)
    fn: int  # windows (with a scored row) not detected
    windows: int  # windows with at least one scored row
    fp_events: int
    recall: float
    precision: float
    f1: float
    range_precision: float
    range_recall: float
    range_f1: float


def block_length(f: RefFile) -> int:
    if f.windows:
        return max(end - start + 1 for start, end in f.windows)
    return max(1, int(0.1 * f.n_rows))


def scored_rows(f: RefFile) -> list[RefRow]:
    """Classify every row of a file, then drop the probationary ones."""
    out = []
    for i in range(f.n_rows):
        window = None
        tp_unit = 0.0
        fp_unit = -1.0  # before the first window
        stretch = probation(f.n_rows)
        for j, (start, end) in enumerate(f.windows):
            if start <= i <= end:
                window = j
                width = end - start + 1
                tp_unit = sigmoid(-(end - i + 1) / width) / sigmoid(-1.0)
                break
        if window is None:
            # the latest window that ended before row i, if any
            prev = None
            for start, end in f.windows:
                if end < i:
                    prev = (start, end)
            if prev is not None:
                prev_width = prev[1] - prev[0] + 1
                fp_unit = sigmoid(abs(prev[1] - i) / (prev_width - 1))
                stretch = max(stretch, prev[1] + 1)
        if i >= probation(f.n_rows):
            out.append(RefRow(i, f.scores[i], window, tp_unit, fp_unit, (i - stretch) // block_length(f)))
    return out


def counted_windows(f: RefFile) -> list[int]:
    """Windows of the file that contain at least one non-probationary row."""
    p = probation(f.n_rows)
    return [j for j, (start, end) in enumerate(f.windows) if end >= p]


def evaluate(
    files: list[RefFile],
    threshold: float | None,
    tp_weight: float,
    fp_weight: float,
    fn_weight: float,
) -> RefResult:
    """Everything at one threshold (None = no detection)."""
    return _evaluate([(f, scored_rows(f)) for f in files], threshold, tp_weight, fp_weight, fn_weight)


def _evaluate(
    prepared: list[tuple[RefFile, list[RefRow]]],
    threshold: float | None,
    tp_weight: float,
    fp_weight: float,
    fn_weight: float,
) -> RefResult:
    raw = 0.0
    tp = fp = fn = events = n_windows = total_windows = 0
    real: list[tuple[int, set[int]]] = []
    predicted: list[tuple[int, set[int]]] = []
    for fi, (f, rows) in enumerate(prepared):
        total_windows += len(f.windows)

        def hit(r: RefRow) -> bool:
            return threshold is not None and r.score >= threshold

        for j in counted_windows(f):
            n_windows += 1
            earliest = None
            for r in rows:
                if r.window == j and hit(r):
                    earliest = r
                    break
            if earliest is None:
                raw += -fn_weight
                fn += 1
            else:
                raw += tp_weight * earliest.tp_unit
                tp += 1
        previous: RefRow | None = None  # the previous row, if it was a false positive
        for r in rows:
            is_fp = r.window is None and hit(r)
            if is_fp:
                raw += fp_weight * r.fp_unit
                fp += 1
                if previous is None or previous.block != r.block:
                    events += 1
            previous = r if is_fp else None
        real.extend(_real_ranges(fi, f, rows))
        predicted.extend(_predicted_ranges(fi, rows, hit))
    null = -fn_weight * n_windows
    perfect = tp_weight * total_windows
    score = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
    recall = tp / n_windows if n_windows else 0.0
    precision = tp / (tp + events) if tp + events else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    r_precision, r_recall = _range_precision_recall(real, predicted)
    r_f1 = 2 * r_precision * r_recall / (r_precision + r_recall) if r_precision + r_recall > 0 else 0.0
    return RefResult(raw, score, threshold, tp, fp, fn, n_windows, events, recall, precision, f1, r_precision, r_recall, r_f1)


def _real_ranges(fi: int, f: RefFile, rows: list[RefRow]) -> list[tuple[int, set[int]]]:
    """Each counted window of file `fi` as (fi, its scored rows)."""
    return [(fi, {r.row for r in rows if r.window == j}) for j in counted_windows(f)]


def _predicted_ranges(fi: int, rows: list[RefRow], hit) -> list[tuple[int, set[int]]]:
    """Maximal runs of consecutive detected rows of file `fi` (its scored rows are consecutive)."""
    out: list[tuple[int, set[int]]] = []
    previous_hit = False
    for r in rows:
        if hit(r):
            if not previous_hit:
                out.append((fi, set()))
            out[-1][1].add(r.row)
        previous_hit = hit(r)
    return out


def _range_precision_recall(real, predicted) -> tuple[float, float]:
    def mean_reward(ranges, others, existence: float) -> float:
        rewards = []
        for fi, rng in ranges:
            overlaps = [len(rng & other) for fj, other in others if fj == fi and rng & other]
            card = len(overlaps)
            coverage = sum(o / len(rng) for o in overlaps) / (card if card > 1 else 1)
            rewards.append(existence * (card > 0) + (1 - existence) * coverage)
        return sum(rewards) / len(rewards) if rewards else 0.0

    return mean_reward(predicted, real, 0.0), mean_reward(real, predicted, 0.5)


def candidate_thresholds(files: list[RefFile]) -> list[float]:
    """Distinct non-probationary scores, highest first."""
    values = set()
    for f in files:
        for i in range(probation(f.n_rows), f.n_rows):
            values.add(f.scores[i])
    return sorted(values, reverse=True)


def optimize(files: list[RefFile], tp_weight: float, fp_weight: float, fn_weight: float) -> RefResult:
    """Best raw score over "no detection" and every distinct scored value; ties go to the highest threshold."""
    prepared = [(f, scored_rows(f)) for f in files]  # the rows do not depend on the threshold
    best = _evaluate(prepared, None, tp_weight, fp_weight, fn_weight)
    for t in candidate_thresholds(files):  # highest first, so only a strictly better raw replaces the best
        r = _evaluate(prepared, t, tp_weight, fp_weight, fn_weight)
        if r.raw > best.raw:
            best = r
    return best
