"""The API for learned (torch) detectors: train on a stream's probationary period, then score causally.

Per file, `LearnedDetector.score_file(series, P)`:

1. P is the probationary period the caller gives: the scenario's `scoring.probation_percent` of the file
   (NAB's min(floor(0.15 n), 750) by default, `harness.scoring.nab.probation_rows`). Only rows < P are trained on.
2. Normalise with the mean and deviation of rows < P (a zero deviation falls back to a small scale) and clip the
   z-values to +-`clip`.
3. Seed torch from (seed, crc32(file name)), build a fresh model (`build_model`) and train it with Adam on the
   pairs (`training_pairs`) of rows < P only, for `epochs` passes in minibatches of `train_batch` (optionally
   with noise or spikes added to the inputs: `input_noise`, `spike_prob`).
4. Run inference for every row through the `infer` hook, on batches of `batch_size` windows (float32,
   (B, window)); by default the torch model under `torch.inference_mode()`, or after `use_backend(spec)` the
   model prepared for that backend (harness.backends: exported, quantized with calibration windows from the
   file's own probationary rows, compiled; once per file). The model and its calibration windows stay in
   `last_model` / `last_calibration`, the prepared one in `last_compiled`.
5. Per-row errors (`errors`) go through the anomaly likelihood (`likelihood.anomaly_likelihood`), whose
   suppression window scales with the stream's length when it is known (`suppress_rows`).
6. Rows < P score 0.0: the model has seen them.

Record by record (`start`, `score_one`, `learn_one`), the same happens incrementally: the first P records are
kept, the model is trained when record P arrives, and from then on each record costs one window of `lag` + 1
normalised values, one inference at batch 1 and one step of `likelihood.StreamingLikelihood`: a cost per record
that does not grow with the stream. It equals `score_file` within the tolerance tests/test_streaming.py states
(float rounding, and damping decisions at near-ties).

Causality: the score of row i >= P depends on rows < P (normalisation, training) and on the window of rows
ending at i (inference), and the likelihood uses errors of rows <= i only; rows i < P are constant. Rows whose
window would reach before the file's first record see copies of that first record (left padding).

Subclasses provide `lag` (how many earlier records a row's input window needs), `build_model`,
`split_windows(w)` (the model's inputs (N, window) and targets of N windows of lag + 1 records; or
`training_pairs(z)`, the same for every row lag .. len(z)-1 of a series, in order) and
`errors(inputs, outputs, targets)` (one error per window). The models are exportable to ONNX: plain
`nn.Linear` layers, no data-dependent control flow in `forward`.
"""

from __future__ import annotations

import zlib
from collections import deque
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from harness.backends import Compiled, RuntimeSpec, as_spec, prepare
from harness.corpus.layout import SeriesFile
from harness.detectors.base import Stream, StreamingDetector
from harness.detectors.likelihood import StreamingLikelihood, anomaly_likelihood, suppress_repeats
from harness.detectors.pruning import PruningSpec

if TYPE_CHECKING:  # torch is imported where a model is trained or run, so a scenario validates without it
    import torch
    from torch import nn

CALIBRATION_SIZE = 256


class LearnedParams(BaseModel):
    """Parameters every learned detector shares: the model's training and the likelihood post-processing."""

    model_config = ConfigDict(extra="forbid")
    window: int = Field(32, ge=2, le=512, description="records per model input")
    epochs: int = Field(20, ge=0, le=1000, description="passes over the probationary pairs")
    train_batch: int = Field(64, ge=1, description="minibatch size for training")
    lr: float = Field(3e-3, gt=0.0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0.0)
    input_noise: float = Field(0.0, ge=0.0, description="training only: Gaussian noise (std, z units) on the inputs")
    spike_prob: float = Field(0.0, ge=0.0, le=1.0, description="training only: chance of a spike on each input value")
    spike_scale: float = Field(5.0, ge=0.0, description="training only: spikes are N(0, spike_scale) in z units")
    batch_size: int = Field(1024, ge=1, description="windows per inference batch (the `infer` hook's B)")
    seed: int = Field(0, ge=0)
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads")
    clip: float = Field(20.0, gt=0.0, description="normalised values are clipped to +-clip")
    # likelihood post-processing (see harness.detectors.likelihood)
    short_window: int = Field(1, ge=1, description="errors averaged into the current one")
    long_window: int = Field(4000, ge=2, description="past averages the current one is compared with")
    min_history: int = Field(100, ge=2, description="past averages needed before a row scores above 0")
    tail: Literal["gauss", "quantile"] = Field("quantile", description="ratio to a quantile, or Numenta's Gauss tail")
    quantile: float = Field(0.995, gt=0.0, le=1.0, description="tail='quantile': which quantile of the history")
    rel_floor: float = Field(0.1, ge=0.0, description="tail='gauss': deviation floor, relative to the mean")
    abs_floor: float = Field(1e-3, gt=0.0, description="absolute floor of the deviation / quantile")
    suppress: int = Field(
        400, ge=0, description="at most this many records a score must exceed all of, else damped (all of it when "
        "the stream's length is not known in advance)",
    )
    suppress_frac: float = Field(0.04, ge=0.0, le=1.0, description="... that is this share of the stream's records")
    suppress_min: int = Field(100, ge=0, description="... but at least this many")
    damping: float = Field(0.5, ge=0.0, le=1.0, description="factor applied to suppressed scores")
    history_from_training: bool = Field(
        True, description="seed the likelihood's error history with the (in-sample) errors of the probationary rows"
    )


def file_seed(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


class LearnedDetector(StreamingDetector):
    """Base class: see the module docstring. Subclasses set `Params` (a subclass of LearnedParams)."""

    Params: ClassVar[type[BaseModel]] = LearnedParams
    uses_backends: ClassVar[bool] = True
    trains_at_probation: ClassVar[bool] = True

    def __init__(self, **params):
        super().__init__(**params)
        self.last_model: "nn.Module | None" = None
        self.last_calibration: np.ndarray | None = None
        self.last_errors: np.ndarray | None = None
        self.last_inputs: np.ndarray | None = None  # the windows of the last file scored (score_file)
        self.last_probation = 0  # that file's probationary rows
        self.backend: RuntimeSpec | None = None
        self.cache_dir: str | None = None
        self.last_compiled: Compiled | None = None
        self.pruning: PruningSpec | None = None  # how each model is pruned after training (set by use_pruning)
        self.last_pruning: dict | None = None  # what pruning did to the last model (harness.detectors.pruning)
        self.prepared: list[dict] = []  # `Compiled.info` of every model prepared for the backend, in order
        self._compiled_for: "nn.Module | None" = None

    def use_backend(self, spec: "RuntimeSpec | dict", cache_dir: str | None = None) -> None:
        """Run inference on `spec`'s backend (harness.backends): each file's trained model is exported,
        quantized (calibrated on windows of its own probationary rows) and compiled once, on first use."""
        self.backend, self.cache_dir = as_spec(spec), cache_dir

    def use_pruning(self, spec: "PruningSpec | dict | None") -> None:
        """Prune each model right after training, then fine-tune it (harness.detectors.pruning)."""
        self.pruning = None if spec is None else PruningSpec.model_validate(spec)

    # --- what subclasses provide ----------------------------------------------------------------------------
    @property
    def lag(self) -> int:
        """Earlier records a row's input needs (window for a forecaster, window - 1 for a reconstruction)."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def split_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs float32 (N, window), targets float32 (N, ...)) of N windows of `lag` + 1 consecutive records
        (float32 (N, lag + 1), the newest last): what the model reads and what its output is compared with."""
        raise NotImplementedError

    def training_pairs(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) for rows lag .. len(z)-1 of `z`, in order: `split_windows` of its sliding windows."""
        return self.split_windows(sliding(z, self.lag + 1))

    def errors(self, inputs: np.ndarray, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """One non-negative error per window (float64, (N,); an ensemble gives one column per member)."""
        raise NotImplementedError

    def window_pair(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (input (1, window), target) pair of the newest record, from its `lag` + 1 normalised values."""
        return self.training_pairs(z)

    def loss(self, outputs: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        import torch

        return torch.nn.functional.mse_loss(outputs, targets)

    # --- the inference hook ---------------------------------------------------------------------------------
    def infer(self, model: nn.Module, batch: np.ndarray) -> np.ndarray:
        """Model outputs for a float32 (B, window) batch: torch, or the backend set by `use_backend`."""
        if self.backend is None:
            import torch

            with torch.inference_mode():
                return model(torch.from_numpy(batch)).numpy()
        if self._compiled_for is not model:
            calibration = self.last_calibration if self.last_calibration is not None and len(self.last_calibration) else batch
            self.last_compiled = prepare(self.backend, model, calibration, self.cache_dir)
            if self.last_pruning is not None:
                self.last_compiled.info["pruning"] = self.last_pruning
            self._compiled_for = model
            self.prepared.append(self.last_compiled.info)
        return self.last_compiled.infer(batch)

    # --- the pipeline ---------------------------------------------------------------------------------------
    def norm_stats(self, head: np.ndarray) -> tuple[float, float]:
        """Mean and scale of the probationary rows; a (near) zero deviation falls back to a small scale."""
        mean = float(np.mean(head)) if len(head) else 0.0
        std = float(np.std(head)) if len(head) else 0.0
        floor = 1e-3 * max(abs(mean), 1e-3)
        return mean, (std if std > floor else floor)

    def normalise(self, values: np.ndarray, mean: float, scale: float) -> np.ndarray:
        z = (np.asarray(values, dtype=np.float64) - mean) / scale
        return np.clip(z, -self.params.clip, self.params.clip).astype(np.float32)

    def pairs(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One (input, target) per row of z: windows reaching before row 0 see copies of row 0."""
        pad = np.full(self.lag, z[0] if len(z) else 0.0, np.float32)
        inputs, targets = self.training_pairs(np.concatenate([pad, z]))
        assert len(inputs) == len(z), (len(inputs), len(z))
        return inputs, targets

    def train(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray, generator: torch.Generator,
              epochs: int | None = None) -> None:
        """`epochs` (default: the `epochs` parameter) passes of Adam over the pairs, in seeded random order."""
        import torch

        p = self.params
        epochs = p.epochs if epochs is None else epochs
        if epochs == 0 or len(inputs) == 0:
            return
        x, y = torch.tensor(inputs, dtype=torch.float32), torch.tensor(targets, dtype=torch.float32)  # copies
        opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for k in range(0, len(x), p.train_batch):
                idx = order[k : k + p.train_batch]
                opt.zero_grad(set_to_none=True)
                xb = x[idx]
                if p.input_noise > 0:
                    xb = xb + p.input_noise * torch.randn(xb.shape, generator=generator)
                if p.spike_prob > 0:  # the targets stay clean: the model learns to look through outliers
                    hit = torch.rand(xb.shape, generator=generator) < p.spike_prob
                    xb = xb + hit * (p.spike_scale * torch.randn(xb.shape, generator=generator))
                self.loss(model(xb), y[idx]).backward()
                opt.step()
        model.eval()

    def fit(self, name: str, head: np.ndarray) -> tuple[nn.Module, float, float]:
        """A fresh model trained on the probationary rows `head` of file `name`, and the normalisation."""
        import torch

        p = self.params
        torch.set_num_threads(p.threads)
        seed = file_seed(p.seed, name)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        mean, scale = self.norm_stats(head)
        inputs, targets = self.training_windows(head, mean, scale)
        model = self.build_model()
        self.train(model, inputs, targets, gen)
        spec = self.pruning
        if spec is not None:  # then a short fine-tune on the same pairs
            from harness.detectors.pruning import prune_and_finetune  # torch, when pruning

            self.last_pruning = prune_and_finetune(model, spec.prune, spec.sparsity,
                                                   lambda m: self.train(m, inputs, targets, gen, spec.prune_epochs))
        model.eval()
        self.last_model, self.last_calibration = model, np.ascontiguousarray(inputs[:CALIBRATION_SIZE], dtype=np.float32)
        return model, mean, scale

    def training_windows(self, head: np.ndarray, mean: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """The (input, target) pairs of the probationary rows `head`: those whose window lies within the file,
        or the padded ones too if that leaves fewer than 16; none for an empty head."""
        if not len(head):
            return self.training_pairs(np.zeros(self.lag, np.float32))
        inputs, targets = self.pairs(self.normalise(head, mean, scale))
        lo = self.lag if len(head) - self.lag >= 16 else 0
        return inputs[lo:], targets[lo:]

    def run_inference(self, model: nn.Module, inputs: np.ndarray) -> np.ndarray:
        bs = self.params.batch_size
        batches = (np.require(inputs[k : k + bs], np.float32, ["C", "W"]) for k in range(0, len(inputs), bs))
        return np.concatenate([self.infer(model, b) for b in batches])

    def raw_errors(self, series: SeriesFile, P: int) -> np.ndarray:
        """Per-row errors of a fresh model trained on the P probationary rows. Errors of rows < P are
        in-sample (the model trained on them)."""
        assert series.values is not None
        values = np.asarray(series.values, dtype=np.float64)
        model, mean, scale = self.fit(series.name, values[:P])
        inputs, targets = self.pairs(self.normalise(values, mean, scale))
        self.last_inputs, self.last_probation = inputs, P
        outputs = self.run_inference(model, inputs)
        return np.asarray(self.errors(inputs, outputs, targets), dtype=np.float64)

    def scored_windows(self) -> np.ndarray:
        """The windows of the last file's scored rows (rows >= P): what timing feeds a backend."""
        if self.last_inputs is None:
            raise RuntimeError("no file scored yet")
        return self.last_inputs[self.last_probation :]

    def backend_summary(self) -> dict:
        """What the backend did over the run: the last model's `Compiled.info`, plus totals over every file."""
        if not self.prepared:
            return {}
        checks = [i["check"] for i in self.prepared if "check" in i]
        return {
            **self.prepared[-1],
            "models_prepared": len(self.prepared),
            "prepare_s_total": round(sum(i.get("prepare_s", 0.0) for i in self.prepared), 3),
            "cache_hits": sum(i.get("cache") == "hit" for i in self.prepared),
            # vs torch on each model's calibration windows; a file whose outputs are all near 0 (a flat series)
            # has a large relative error from a tiny absolute one, hence the median too
            "check_max_abs_err": max((c["max_abs_err"] for c in checks), default=None),
            "check_max_rel_err": max((c["rel_err"] for c in checks), default=None),
            "check_median_rel_err": float(np.median([c["rel_err"] for c in checks])) if checks else None,
        }

    def suppress_rows(self, length: int | None) -> int:
        """The likelihood's suppression window for a stream of `length` records: suppress_frac of it, within
        [suppress_min, suppress] (NAB's windows, and so the span of one event, scale with the file's length);
        `suppress` when the length is not known."""
        p = self.params
        if length is None:
            return p.suppress
        return int(min(p.suppress, max(p.suppress_min, int(p.suppress_frac * length))))

    def likelihood_settings(self, P: int, length: int | None) -> dict:
        """The likelihood's parameters for a stream with P probationary records: one place for both paths."""
        p = self.params
        return dict(
            start=P,
            short_window=p.short_window,
            long_window=p.long_window,
            min_history=p.min_history,
            tail=p.tail,
            quantile=p.quantile,
            rel_floor=p.rel_floor,
            abs_floor=p.abs_floor,
            suppress=self.suppress_rows(length),
            damping=p.damping,
        )

    def history_errors(self, err: np.ndarray, P: int) -> np.ndarray:
        """Errors as the likelihood sees them: NaN for padded windows, and for training rows unless
        `history_from_training` (then their in-sample errors seed the history)."""
        e = np.array(err, dtype=np.float64)
        e[: (min(self.lag, P) if self.params.history_from_training else P)] = np.nan
        return e

    def new_likelihood(self, P: int, length: int | None) -> StreamingLikelihood:
        """The record-by-record likelihood of a stream (what `scores_from_errors` computes at once)."""
        return StreamingLikelihood(**self.likelihood_settings(P, length))

    def ratios(self, err: np.ndarray, P: int, length: int) -> np.ndarray:
        """The likelihood of per-row errors before repeats are suppressed (r of likelihood.py)."""
        return anomaly_likelihood(self.history_errors(err, P), **{**self.likelihood_settings(P, length), "suppress": 0})

    def scores_from_errors(self, err: np.ndarray, P: int, length: int) -> np.ndarray:
        """Likelihood scores of per-row errors (of the first len(err) rows of a stream); rows < P score 0."""
        s = suppress_repeats(self.ratios(err, P, length), self.suppress_rows(length), self.params.damping)
        s[:P] = 0.0
        return s

    def score_file(self, series: SeriesFile, probation: int) -> np.ndarray:
        if series.n_rows == 0:
            return np.zeros(0)
        err = self.raw_errors(series, probation)
        self.last_errors = err
        return self.scores_from_errors(err, probation, series.n_rows)

    # --- record by record -----------------------------------------------------------------------------------
    def start(self, stream: Stream) -> None:
        self._stream = stream
        self._head: list[float] = []  # the probationary records, until the model is trained on them
        self._fitted: "tuple[nn.Module, float, float] | None" = None
        self._window: deque[float] = deque(maxlen=self.lag)  # the previous `lag` normalised records
        self._likelihood: StreamingLikelihood | None = None
        self._seen = 0

    def score_one(self, timestamp, value) -> float:
        P = self._stream.probation
        if self._seen < P:
            return 0.0
        if self._fitted is None:
            self._begin_scoring(np.asarray(self._head, dtype=np.float64))
        model = self._fitted[0]
        window = [*self._window, self._normalise_one(value)]
        if len(window) < self.lag + 1:  # the window reaches before the stream's first record: pad with it
            window = [window[0]] * (self.lag + 1 - len(window)) + window
        x, y = self.window_pair(np.asarray(window, dtype=np.float32))
        return self._likelihood.update(self.errors(x, self.infer(model, x), y)[0])

    def learn_one(self, timestamp, value) -> None:
        if self._fitted is None:
            self._head.append(float(value))
        else:
            self._window.append(self._normalise_one(value))
        self._seen += 1

    def score_many(self, timestamps, values) -> np.ndarray:
        """`score_one` + `learn_one` over a chunk, with one batched inference for the chunk's scored records:
        the probationary part is kept (scores 0), the model is trained when probation ends, and the rest is
        windowed exactly as record by record (the same left padding), then fed to the likelihood in order."""
        values = np.asarray(values, dtype=np.float64)
        out = np.zeros(len(values))
        k = min(len(values), max(self._stream.probation - self._seen, 0))
        self._head.extend(values[:k].tolist())
        self._seen += k
        if k == len(values):
            return out
        if self._fitted is None:
            self._begin_scoring(np.asarray(self._head, dtype=np.float64))
        model, mean, scale = self._fitted
        z = self.normalise(values[k:], mean, scale)
        known = np.asarray(self._window, dtype=np.float32)
        full = np.concatenate([known, z])
        if len(known) < self.lag:  # windows reaching before the stream's first record see copies of it
            full = np.concatenate([np.full(self.lag - len(known), full[0], np.float32), full])
        inputs, targets = self.training_pairs(full)
        errors = self.errors(inputs, self.run_inference(model, inputs), targets)
        out[k:] = self._likelihood.update_many(errors)
        self._window.extend(z.tolist())
        self._seen += len(z)
        return out

    def _normalise_one(self, value: float) -> float:
        """`normalise` of one value, in plain floats (the same float64 arithmetic, then float32)."""
        _, mean, scale = self._fitted
        clip = self.params.clip
        return float(np.float32(min(max((float(value) - mean) / scale, -clip), clip)))

    def _begin_scoring(self, head: np.ndarray) -> None:
        """Train on the probationary records, seed the likelihood with their (in-sample) errors, and keep their
        last `lag` normalised values as the first window."""
        P = len(head)
        self._fitted = model, mean, scale = self.fit(self._stream.name, head)
        self._likelihood = self.new_likelihood(P, self._stream.length)
        if P:
            z = self.normalise(head, mean, scale)
            inputs, targets = self.pairs(z)
            self._likelihood.update_many(self.history_errors(self.errors(inputs, self.run_inference(model, inputs), targets), P))
            self._window.extend(z.tolist())
        self._head = []


def sliding(z: np.ndarray, width: int) -> np.ndarray:
    """(len(z) - width + 1, width) read-only view of consecutive windows (none when z is shorter than width)."""
    if len(z) < width:
        return np.zeros((0, width), z.dtype)
    return np.lib.stride_tricks.sliding_window_view(z, width)
