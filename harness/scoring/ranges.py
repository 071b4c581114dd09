"""Range-based precision and recall for time series (Tatbul, Lee, Zdonik, Alam, Gottschlich: "Precision and
Recall for Time Series", NeurIPS 2018), at one threshold.

Real ranges are the labelled windows (their scored rows); predicted ranges are maximal runs of consecutive
detections within one file. Settings: a flat positional bias, a reciprocal cardinality factor, and an existence
weight α = 0.5 for recall (α = 0 for precision, as in the paper):

    recall(R_i)    = α · [R_i overlaps any P_j] + (1 - α) · γ(R_i) · Σ_j |R_i ∩ P_j| / |R_i|
    precision(P_j) = γ(P_j) · Σ_i |P_j ∩ R_i| / |P_j|
    γ(X) = 1 / (number of ranges of the other kind overlapping X), 1 when at most one does
    recall = mean over real ranges, precision = mean over predicted ranges (0 without any), F1 = 2PR / (P + R)

Why α = 0.5: streaming detectors alert on a point, so the coverage term alone (α = 0) gives every real detector a
recall near 0 (numenta 0.008 on NAB), and existence alone (α = 1) repeats the window recall. Half and half
credits the alert and, as much again, a detection that spans the anomaly.

Unlike event-based precision, a detection's *extent* counts: flagging every row of a file makes one predicted
range whose precision is the share of the file inside windows (about 10% on NAB), so it cannot pass for a good
detector. Plain numpy, one pass over the scored rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXISTENCE_WEIGHT = 0.5  # α of the recall


@dataclass(frozen=True)
class RangeScores:
    precision: float
    recall: float
    f1: float


def range_scores(gid: np.ndarray, file_of: np.ndarray, row: np.ndarray, detected: np.ndarray) -> RangeScores:
    """Range-based precision, recall and F1 of one detection mask over the scored rows of a corpus (arrays
    aligned row by row: window id or -1, file index, row position, detected)."""
    real_ids, real_sizes = np.unique(gid[gid >= 0], return_counts=True)
    starts = detected & ~np.r_[False, detected[:-1] & (file_of[1:] == file_of[:-1]) & (np.diff(row) == 1)]
    pred = np.cumsum(starts) - 1  # predicted range id of each detected row
    pred_sizes = np.bincount(pred[detected]) if detected.any() else np.zeros(0, np.int64)
    both = detected & (gid >= 0)
    pairs, overlap = np.unique(np.stack([gid[both], pred[both]]), axis=1, return_counts=True)
    real_of_pair = np.searchsorted(real_ids, pairs[0])
    pred_of_pair = pairs[1]
    real_card = np.bincount(real_of_pair, minlength=len(real_ids))
    pred_card = np.bincount(pred_of_pair, minlength=len(pred_sizes))
    recall_each = np.bincount(real_of_pair, overlap / real_sizes[real_of_pair], minlength=len(real_ids))
    recall_each = EXISTENCE_WEIGHT * (real_card > 0) + (1 - EXISTENCE_WEIGHT) * recall_each / np.maximum(real_card, 1)
    precision_each = np.bincount(pred_of_pair, overlap / pred_sizes[pred_of_pair], minlength=len(pred_sizes))
    precision_each = precision_each / np.maximum(pred_card, 1)
    recall = float(recall_each.mean()) if len(real_ids) else 0.0
    precision = float(precision_each.mean()) if len(pred_sizes) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RangeScores(precision, recall, f1)
