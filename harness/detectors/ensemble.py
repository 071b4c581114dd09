"""Ensemble: several learned detectors as one model, their likelihoods combined, plus a daily-profile deviation,
a pattern-novelty and a range-novelty signal.

Why: each member misses different anomalies (docs/detectors.md). The autoencoder sees a window's shape, the
LSTM forecaster a broken continuation; a wider autoencoder sees slower changes; none of them sees a day back,
so a record unlike the same time on earlier days (`SeasonalDeviation`) is scored beside them, and so is a
stream that starts to move in a way it never has (`PatternNovelty`). Taking, for every
record, the largest of these likelihood ratios catches what any of them sees, and suppressing repeats once, on
the combined score, keeps one anomaly to one alert. Short spikes to levels never seen before are what all of
them are slowest on; `RangeNovelty` scores those directly.

Per file (and the same record by record, through the same `Combination` object):

1. Every member is trained on the probationary rows as it would be alone (its own parameters, the ensemble's
   seed, threads, clip, batch size and likelihood quantile), and the trained members are stacked into one torch module
   (`torch_models.Stack`) that reads the ensemble's window (the widest member's) and gives every member's
   output side by side. One model per file: a backend exports, quantizes and times the ensemble as a whole.
2. Each member's errors go through its own anomaly likelihood with suppression off: r_m in [0, 1). So does
   the seasonal deviation |z_i - median(z_{i-p}, ..., z_{i-Kp})| (p: records per day, from the probationary
   timestamps; K = `seasonal_days`; z normalised by the probationary rows), with quantile `seasonal_quantile`,
   and so does the pattern novelty 1 / (1 + earlier occurrences of the word of the last `pattern_length`
   records' value bins; `pattern_bins` bins over the probationary rows' range), with `pattern_quantile`.
3. r = max of those, then repeats suppressed over the ensemble's suppression window (`suppress_rows`).
4. score = max(r, novelty), where novelty is `novelty_level` (+ up to 0.1 by how far) for a record outside
   the range of every earlier record of the stream, unless such a record came within the last
   `novelty_quiet` x suppression window.
5. Repeats suppressed once more over `final_suppress` x the window (an alert from step 3 and one from step 4 on
   the same event count once); rows < P score 0.

Every step reads rows <= i only, so the ensemble is causal as its members are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.detectors.autoencoder import DenseAutoencoder
from harness.detectors.base import Stream
from harness.detectors.learned import CALIBRATION_SIZE, LearnedDetector
from harness.detectors.likelihood import StreamingLikelihood, StreamingSuppression
from harness.detectors.lstm import LSTMForecaster
from harness.detectors.pruning import PruningSpec

if TYPE_CHECKING:
    from torch import nn

    from harness.corpus.layout import SeriesFile

MEMBER_TYPES: dict[str, type[LearnedDetector]] = {"autoencoder": DenseAutoencoder, "lstm": LSTMForecaster}
SHARED = ("threads", "seed", "clip", "batch_size", "quantile")  # the ensemble's, for every member
NOVELTY_SPAN = 0.1  # a novelty score lies in [level, level + NOVELTY_SPAN)


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["autoencoder", "lstm"]
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_params(self) -> Member:
        MEMBER_TYPES[self.type].Params.model_validate(self.member_params({}))
        return self

    def member_params(self, shared: dict[str, Any]) -> dict[str, Any]:
        """The member's own parameters with the ensemble's shared ones, and its own suppression off."""
        return {**self.params, **shared, "suppress": 0}


def _default_members() -> list[Member]:
    return [Member(type="autoencoder", params={"window": 64}), Member(type="lstm")]


class EnsembleParams(BaseModel):
    """Defaults: the grid's best on NAB v1.1 by the mean of the three profiles, which 56 of 58 leave-one-file-out
    folds also choose; docs/detectors.md gives the protocol and its figures."""

    model_config = ConfigDict(extra="forbid")
    members: list[Member] = Field(default_factory=_default_members, min_length=1,
                                  description="learned detectors combined: {type, params}")
    quantile: float = Field(0.998, gt=0.0, le=1.0, description="every member's likelihood quantile (the members' own is overridden)")
    novelty_level: float = Field(0.6, ge=0.0, le=0.9, description="score of a record outside the range seen so far (0: off)")
    novelty_quiet: float = Field(0.25, ge=0.0, description="after such a record, no other for this share of the suppression window")
    seasonal_days: int = Field(3, ge=0, le=28, description="earlier days whose median at the same time of day is the reference (0: off)")
    seasonal_quantile: float = Field(0.998, gt=0.0, le=1.0, description="the seasonal deviation's likelihood quantile")
    pattern_bins: int = Field(8, ge=0, le=64, description="value bins of the pattern novelty's words (0: off)")
    pattern_length: int = Field(3, ge=1, le=8, description="records per word of the pattern novelty")
    pattern_quantile: float = Field(0.998, gt=0.0, le=1.0, description="the pattern novelty's likelihood quantile")
    final_suppress: float = Field(0.5, ge=0.0, description="last suppression of repeats, as a share of the suppression window (0: off)")
    suppress: int = Field(400, ge=0, description="as a learned detector's: at most this many records ...")
    suppress_frac: float = Field(0.04, ge=0.0, le=1.0, description="... this share of the stream's records")
    suppress_min: int = Field(100, ge=0, description="... but at least this many")
    damping: float = Field(0.5, ge=0.0, le=1.0, description="factor applied to suppressed scores")
    batch_size: int = Field(1024, ge=1, description="windows per inference batch")
    seed: int = Field(0, ge=0)
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads")
    clip: float = Field(20.0, gt=0.0, description="normalised values are clipped to +-clip")


class RangeNovelty:
    """Scores records that leave the range of every earlier record of the stream (see the module docstring);
    whole chunks at a time, with state carried between them, so a file and a stream agree exactly."""

    def __init__(self, start: int, level: float, quiet: int):
        self.start, self.level, self.quiet = start, level, quiet
        self.i, self.hi, self.lo, self.last = 0, -np.inf, np.inf, -(10**18)

    def update_many(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        out = np.zeros(len(v))
        if not len(v) or self.level <= 0:
            return out
        hi = np.maximum.accumulate(np.concatenate([[self.hi], v]))  # hi[j]: the maximum before record j
        lo = np.minimum.accumulate(np.concatenate([[self.lo], v]))
        rows = self.i + np.arange(len(v))
        with np.errstate(invalid="ignore"):  # the stream's first record has no range yet
            beyond = np.maximum(v - hi[:-1], lo[:-1] - v)
            x = beyond / np.maximum(hi[:-1] - lo[:-1], 1e-12)
        for j in np.flatnonzero((beyond > 0) & (rows >= self.start)):
            if rows[j] - self.last > self.quiet:
                out[j] = self.level + NOVELTY_SPAN * x[j] / (1.0 + x[j])
            self.last = rows[j]
        self.i, self.hi, self.lo = self.i + len(v), hi[-1], lo[-1]
        return out


class AfterProbation:
    """A model-free signal through its own likelihood, chunk by chunk, that needs the probationary records first
    (a scale, a period, a range): the first P records are kept until all are in, then `_begin` reads them and
    their errors seed the likelihood's history (the probationary rows score 0 anyway)."""

    def __init__(self, P: int, on: bool, likelihood: StreamingLikelihood):
        self.P, self.on, self.likelihood = P, on, likelihood
        self.started = False  # the probationary records are all in
        self.head_t: list[int] = []
        self.head_v: list[float] = []

    def update_many(self, timestamps: np.ndarray, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        out = np.zeros(len(v))
        if not self.on or not len(v):
            return out
        k = 0
        if not self.started:
            k = min(len(v), max(self.P - len(self.head_v), 0))
            self.head_t += np.asarray(timestamps[:k]).astype("datetime64[s]").astype(np.int64).tolist()
            self.head_v += v[:k].tolist()
            if len(self.head_v) < self.P:
                return out
            head_t, head_v = np.asarray(self.head_t, dtype=np.int64), np.asarray(self.head_v)
            self.started, self.head_t, self.head_v = True, [], []
            self._begin(head_t, head_v)
            if len(head_v):
                self.likelihood.update_many(self._errors(head_v))
        if k < len(v):
            out[k:] = self.likelihood.update_many(self._errors(v[k:]))
        return out

    def _begin(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        raise NotImplementedError

    def _errors(self, v: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SeasonalDeviation(AfterProbation):
    """Step 2's daily-profile error: the period is a day over the median step of the probationary timestamps,
    the scale theirs; every record's error is |z - median of z one, two ... `days` days earlier| (NaN while
    fewer days exist), and it scores once a day of those errors is in its likelihood's history."""

    def __init__(self, P: int, days: int, likelihood: StreamingLikelihood):
        super().__init__(P, days > 0, likelihood)
        self.days = days
        self.period = 0  # 0: not known yet (or no timestamps to know it from)
        self.mean, self.scale = 0.0, 1.0
        self.past = np.zeros(0)  # the last days x period normalised values

    def _begin(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        steps = np.diff(timestamps)
        step = float(np.median(steps)) if len(steps) else 0.0
        self.period = int(round(86400.0 / step)) if step > 0 else 0
        # A day of its own errors before it scores: over fewer, the likelihood's quantile is the largest of a few
        # hours' errors, and the first ordinary day-to-day difference alerted (11 of the default's 149 false-alarm
        # events on NAB).
        self.likelihood.min_history = max(self.likelihood.min_history, self.period)
        self.mean = float(values.mean()) if len(values) else 0.0
        std = float(values.std()) if len(values) else 0.0
        self.scale = std if std > 1e-12 else 1.0

    def _errors(self, v: np.ndarray) -> np.ndarray:
        z = (v - self.mean) / self.scale
        span = self.days * self.period
        if self.period <= 0:
            return np.full(len(z), np.nan)
        seq = np.concatenate([self.past, z])
        start = len(self.past)
        rows = np.arange(start, len(seq))
        err = np.full(len(z), np.nan)
        ok = rows >= span
        if ok.any():
            r = rows[ok]
            lags = np.stack([seq[r - d * self.period] for d in range(1, self.days + 1)])
            err[ok] = np.abs(seq[r] - np.median(lags, axis=0))
        self.past = seq[-span:] if span else np.zeros(0)
        return err


class PatternNovelty(AfterProbation):
    """Step 2's pattern error: each record's value is put in one of `bins` bins spanning the probationary rows'
    1st-99th percentiles (plus one bin below and one above), the last `length` bins make a word, and the
    error is 1 / (1 + how often that word came before in the stream). A stream that starts to move in a way
    it never has (a new rhythm at the same level) scores high although no single value is out of range; on
    NAB it finds two of machine_temperature_system_failure's windows that every other signal misses. Memory
    is bounded: at most (bins + 2) ** length words are counted."""

    def __init__(self, P: int, bins: int, length: int, likelihood: StreamingLikelihood):
        super().__init__(P, bins > 0, likelihood)
        self.bins, self.length = bins, length
        self.lo, self.span = 0.0, 1.0
        self.recent = np.zeros(0, dtype=np.int64)  # the last length - 1 bins
        self.counts: dict[int, int] = {}

    def _begin(self, timestamps: np.ndarray, values: np.ndarray) -> None:
        if len(values):
            lo, hi = np.percentile(values, [1, 99])
            self.lo, self.span = float(lo), max(float(hi - lo), 1e-12)

    def _errors(self, v: np.ndarray) -> np.ndarray:
        q = np.clip(np.floor((v - self.lo) / self.span * self.bins), -1, self.bins).astype(np.int64) + 1
        seq = np.concatenate([self.recent, q])
        ends = np.arange(len(self.recent), len(seq))
        full = ends >= self.length - 1  # a whole word ends here
        err = np.full(len(q), np.nan)
        if full.any():
            at = ends[full]
            words = sum(seq[at - j] * (self.bins + 2) ** j for j in range(self.length))
            uniq, inv, n = np.unique(words, return_inverse=True, return_counts=True)
            order = np.argsort(inv, kind="stable")
            earlier = np.empty(len(words), dtype=np.int64)  # occurrences before this one, within the chunk
            earlier[order] = np.arange(len(words)) - np.repeat(np.cumsum(n) - n, n)
            before = np.array([self.counts.get(int(w), 0) for w in uniq], dtype=np.int64)
            err[full] = 1.0 / (1.0 + before[inv] + earlier)
            self.counts.update((int(w), int(b + c)) for w, b, c in zip(uniq, before, n))
        self.recent = seq[len(seq) - self.length + 1 :] if self.length > 1 else seq[:0]
        return err


class Combination:
    """Steps 2 (seasonal, pattern) to 5 for one stream: from the members' combined ratio r to the score, chunk by
    chunk. `Ensemble.score_file` runs a whole file through a fresh one; a live stream keeps one, so both agree."""

    def __init__(self, P: int, suppress: int, params: EnsembleParams, seasonal: StreamingLikelihood,
                 pattern: StreamingLikelihood):
        self.P, self.i = P, 0
        self.seasonal = SeasonalDeviation(P, params.seasonal_days, seasonal)
        self.pattern = PatternNovelty(P, params.pattern_bins, params.pattern_length, pattern)
        self.suppression = StreamingSuppression(suppress, params.damping)
        self.novelty = RangeNovelty(P, params.novelty_level, int(params.novelty_quiet * suppress))
        self.final = StreamingSuppression(int(params.final_suppress * suppress), params.damping)

    def update_many(self, r: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> np.ndarray:
        r = np.maximum.reduce([np.asarray(r, dtype=np.float64), self.seasonal.update_many(timestamps, values),
                               self.pattern.update_many(timestamps, values)])
        s = np.maximum(self.suppression.update_many(r), self.novelty.update_many(values))
        s = self.final.update_many(s)
        s[: max(self.P - self.i, 0)] = 0.0
        self.i += len(s)
        return s


class EnsembleLikelihood:
    """Step 2-3's members' part, record by record (`update`) or chunk by chunk (`update_many`): the largest of
    the members' likelihood ratios (suppression follows in `Combination`)."""

    def __init__(self, members: list[StreamingLikelihood]):
        self.members = members

    def update(self, errors: np.ndarray) -> float:
        return max(m.update(e) for m, e in zip(self.members, errors))

    def update_many(self, errors: np.ndarray) -> np.ndarray:
        return np.max([m.update_many(errors[:, k]) for k, m in enumerate(self.members)], axis=0)


class Ensemble(LearnedDetector):
    """See the module docstring."""

    Params = EnsembleParams

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        shared = {k: getattr(p, k) for k in SHARED}
        self.members: list[LearnedDetector] = [MEMBER_TYPES[m.type](**m.member_params(shared)) for m in p.members]
        width = self.lag + 1
        self.spans: list[tuple[int, int]] = []  # the columns of the ensemble's window each member's model reads
        self.widths: list[int] = []  # each member's output width
        for m in self.members:
            own = np.arange(width - m.lag - 1, width, dtype=np.float32)  # a member's window: the newest lag + 1
            inputs, targets = m.window_pair(own)
            cols = inputs[0].astype(int)
            assert np.array_equal(cols, np.arange(cols[0], cols[0] + len(cols))), "a member must read adjacent records"
            self.spans.append((int(cols[0]), int(cols[-1]) + 1))
            self.widths.append(targets.shape[1])

    @property
    def lag(self) -> int:
        return max(m.lag for m in self.members)

    def split_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.require(windows, np.float32, ["C", "W"])
        return x, x

    def build_model(self) -> nn.Module:
        raise NotImplementedError("an ensemble's model is its trained members, stacked by fit()")

    def use_pruning(self, spec: "PruningSpec | dict | None") -> None:
        super().use_pruning(spec)
        for m in self.members:  # each member prunes itself after its own training
            m.use_pruning(self.pruning)

    def fit(self, name: str, head: np.ndarray) -> tuple[nn.Module, float, float]:
        from harness.detectors.torch_models import Stack

        model = Stack([m.fit(name, head)[0] for m in self.members], self.spans).eval()
        if self.pruning is not None:
            done = [m.last_pruning for m in self.members]
            self.last_pruning = {**done[0], **{k: sum(d[k] for d in done) for k in ("weights_before", "weights", "weights_nonzero")}}
            self.last_pruning["zero_share"] = round(1 - self.last_pruning["weights_nonzero"] / max(self.last_pruning["weights"], 1), 4)
        mean, scale = self.norm_stats(head)
        inputs, _ = self.training_windows(head, mean, scale)
        self.last_model, self.last_calibration = model, np.ascontiguousarray(inputs[:CALIBRATION_SIZE], dtype=np.float32)
        return model, mean, scale

    def errors(self, inputs: np.ndarray, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """One column per member: its own error of its own part of the outputs."""
        columns, at, width = [], 0, inputs.shape[1]
        for m, (a, b), w in zip(self.members, self.spans, self.widths):
            _, own_targets = m.split_windows(inputs[:, width - m.lag - 1 :])
            columns.append(m.errors(inputs[:, a:b], outputs[:, at : at + w], own_targets))
            at += w
        return np.column_stack(columns)

    def history_errors(self, err: np.ndarray, P: int) -> np.ndarray:
        return np.column_stack([m.history_errors(err[:, k], P) for k, m in enumerate(self.members)])

    def new_likelihood(self, P: int, length: int | None) -> EnsembleLikelihood:
        return EnsembleLikelihood([StreamingLikelihood(**m.likelihood_settings(P, length)) for m in self.members])

    def ratios(self, err: np.ndarray, P: int, length: int) -> np.ndarray:
        """The members' part of step 2 for a whole file (the record-by-record path is `new_likelihood`)."""
        return np.max([m.ratios(err[:, k], P, length) for k, m in enumerate(self.members)], axis=0)  # raw errors: each member NaNs its own

    def scores_from_errors(self, err: np.ndarray, P: int, length: int) -> np.ndarray:
        """The members' combined ratio, unsuppressed: `Combination` does the rest."""
        r = self.ratios(err, P, length)
        r[:P] = 0.0
        return r

    def combination(self, P: int, length: int | None) -> Combination:
        """Steps 2 (seasonal, pattern) to 5 for a stream with P probationary records (their likelihoods: the first
        member's settings, at `seasonal_quantile` and `pattern_quantile`)."""
        settings = {**self.members[0].likelihood_settings(P, length), "suppress": 0}
        return Combination(P, self.suppress_rows(length), self.params,
                           StreamingLikelihood(**{**settings, "quantile": self.params.seasonal_quantile}),
                           StreamingLikelihood(**{**settings, "quantile": self.params.pattern_quantile}))

    def combined(self, r: np.ndarray, series: SeriesFile, P: int) -> np.ndarray:
        """Steps 2 (seasonal, pattern) to 5 for a whole file, from the members' combined ratio r."""
        return self.combination(P, series.n_rows).update_many(r, series.timestamps, series.values)

    def score_file(self, series: SeriesFile, probation: int) -> np.ndarray:
        return self.combined(super().score_file(series, probation), series, probation)

    def start(self, stream: Stream) -> None:
        super().start(stream)
        self._combination = self.combination(stream.probation, stream.length)

    def score_one(self, timestamp, value) -> float:
        r = super().score_one(timestamp, value)
        return float(self._combination.update_many(np.array([r]), np.array([timestamp]), np.array([value]))[0])

    def score_many(self, timestamps, values) -> np.ndarray:
        return self._combination.update_many(super().score_many(timestamps, values), timestamps, values)
