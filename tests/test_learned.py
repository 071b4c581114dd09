"""The learned detectors (LSTM forecaster, dense autoencoder) and their likelihood post-processing: causal, seeded
and deterministic, inference through the overridable `infer` hook, the likelihood causal and in [0, 1), a spike
after the probationary period scored highest, inference through a backend set by `use_backend`, and a registry
and detector classes that import torch only when a model is built."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

from harness.corpus.layout import SeriesFile
from harness.detectors import DETECTORS, StreamingDetector, resolve_detector
from harness.detectors.autoencoder import DenseAutoencoder
from harness.detectors.ensemble import Ensemble
from harness.detectors.learned import LearnedDetector
from harness.detectors.likelihood import anomaly_likelihood, log10_gauss_tail, suppress_repeats
from harness.detectors.lstm import LSTMForecaster
from harness.scoring.nab import probation_rows

T0 = np.datetime64("2026-01-01T00:00:00", "s")
STEP = np.timedelta64(300, "s")

# small and fast: every test trains in well under a second
SMALL = {"window": 8, "epochs": 2, "hidden": 8, "min_history": 20, "suppress": 30}
SMALL_AE = {**SMALL, "bottleneck": 3}


def series(values, name: str = "cat/file.csv") -> SeriesFile:
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    stamps = T0 + np.arange(n) * STEP
    return SeriesFile(name=name, n_rows=n, windows=np.zeros((0, 2), np.int64), timestamps=stamps, values=v)


def nab_file(det: StreamingDetector, s: SeriesFile) -> np.ndarray:
    """score_file with NAB's default probationary period (15% of the file, at most 750 rows)."""
    return det.score_file(s, probation_rows(s.n_rows))


def wave(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50.0 + 10.0 * np.sin(2 * np.pi * t / 48) + rng.normal(0.0, 1.0, n)


SMALL_ENSEMBLE = {  # a window-8 autoencoder and a window-6 LSTM: the ensemble's window is 8 records
    "members": [{"type": "autoencoder", "params": {k: v for k, v in SMALL_AE.items() if k != "suppress"}},
                {"type": "lstm", "params": {**{k: v for k, v in SMALL.items() if k != "suppress"}, "window": 6}}],
    "suppress": 30,
}
PARAMS = {"lstm": SMALL, "autoencoder": SMALL_AE, "ensemble": SMALL_ENSEMBLE}
MAKERS = {
    "lstm": lambda **kw: LSTMForecaster(**{**SMALL, **kw}),
    "autoencoder": lambda **kw: DenseAutoencoder(**{**SMALL_AE, **kw}),
    "ensemble": lambda **kw: Ensemble(**{**SMALL_ENSEMBLE, **kw}),
}


# causality ----------------------------------------------------------------------------------------------------


CAUSAL_N = 400
_CAUSAL_BASE: dict[str, np.ndarray] = {}


def causal_base(kind: str) -> np.ndarray:
    if kind not in _CAUSAL_BASE:
        _CAUSAL_BASE[kind] = nab_file(MAKERS[kind](), series(wave(CAUSAL_N)))
    return _CAUSAL_BASE[kind]


@pytest.mark.parametrize("kind", sorted(MAKERS))
@settings(max_examples=12, deadline=None)
@given(i=st.integers(0, CAUSAL_N - 2), future_seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1.0, 40.0, 1e4]))
@example(i=59, future_seed=1, scale=40.0)  # the last probationary row
@example(i=60, future_seed=1, scale=40.0)  # the first scored row
@example(i=0, future_seed=2, scale=1e4)
def test_scores_are_causal(kind: str, i: int, future_seed: int, scale: float) -> None:
    """Property: replacing every record after i by a different future never changes the scores of rows <= i."""
    x = wave(CAUSAL_N)
    P = probation_rows(CAUSAL_N)
    assert P == 60
    base = causal_base(kind)
    assert base.shape == (CAUSAL_N,) and np.all(np.isfinite(base)) and np.all(base[:P] == 0.0) and base[P:].max() > 0
    y = x.copy()
    y[i + 1 :] = np.random.default_rng(future_seed).normal(0.0, scale, CAUSAL_N - i - 1)  # spikes included
    got = nab_file(MAKERS[kind](), series(y))
    np.testing.assert_array_equal(got[: i + 1], base[: i + 1], err_msg=f"{kind}: a row <= {i} changed")
    assert not np.array_equal(got[i + 1 :], base[i + 1 :])  # the detector did read the new future


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_record_by_record_matches_score_file(kind: str) -> None:
    """score_one/learn_one (the base class's loop) give score_file's scores, up to float rounding."""
    s = series(wave(200, seed=3))
    det = MAKERS[kind]()
    np.testing.assert_allclose(StreamingDetector.score_file(det, s, probation_rows(s.n_rows)), nab_file(det, s), rtol=0, atol=1e-6)


# determinism ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_deterministic_and_seeded_per_file(kind: str) -> None:
    x = wave(300)
    a = nab_file(MAKERS[kind](), series(x, "a/one.csv"))
    det = MAKERS[kind]()
    np.testing.assert_array_equal(nab_file(det, series(x, "a/one.csv")), a)
    nab_file(det, series(wave(250, seed=5), "b/two.csv"))  # a reused instance starts afresh on every file
    np.testing.assert_array_equal(nab_file(det, series(x, "a/one.csv")), a)
    # the seed comes from (seed, file name): another name or seed trains another model
    assert not np.array_equal(nab_file(MAKERS[kind](), series(x, "a/other.csv")), a)
    assert not np.array_equal(nab_file(MAKERS[kind](seed=1), series(x, "a/one.csv")), a)


# the inference hook --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_infer_hook_is_used_with_float32_windows(kind: str) -> None:
    cls = type(MAKERS[kind]())
    seen: list[tuple[tuple[int, ...], np.dtype]] = []

    class Hooked(cls):  # type: ignore[misc, valid-type]
        def infer(self, model, batch):
            seen.append((batch.shape, batch.dtype))
            return super().infer(model, batch) + np.float32(3.0)  # a backend that is badly off

    params = {**PARAMS[kind], "batch_size": 64}
    s = series(wave(300))
    plain = nab_file(cls(**params), s)
    hooked = nab_file(Hooked(**params), s)
    assert seen, "infer was never called"
    assert all(dtype == np.float32 and len(shape) == 2 and shape[1] == 8 for shape, dtype in seen), seen
    assert all(1 <= shape[0] <= 64 for shape, _ in seen), seen  # batches of at most batch_size windows
    assert sum(shape[0] for shape, _ in seen) >= 300  # every row's window went through the hook
    assert not np.array_equal(plain, hooked)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_model_and_calibration_are_kept_and_exportable_in_shape(kind: str) -> None:
    det = MAKERS[kind]()
    nab_file(det, series(wave(300)))
    model, calib = det.last_model, det.last_calibration
    assert isinstance(model, nn.Module)
    assert calib.dtype == np.float32 and calib.ndim == 2 and calib.shape[1] == 8 and 1 <= len(calib) <= 256
    leaves = [m for m in model.modules() if not list(m.children())]
    assert all(isinstance(m, (nn.Linear, nn.Tanh)) for m in leaves), leaves  # no nn.LSTM: ONNX keeps named weights
    out = det.infer(model, calib[:5])
    assert out.dtype == np.float32 and out.shape[0] == 5


# likelihood ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tail", ["gauss", "quantile"])
def test_likelihood_is_causal_and_in_unit_interval(tail: str) -> None:
    rng = np.random.default_rng(4)
    for trial in range(20):
        n = int(rng.integers(5, 400))
        e = np.abs(rng.standard_t(2, n)) * rng.choice([1e-6, 1.0, 1e4])
        e[rng.random(n) < 0.2] = 0.0
        e[: int(rng.integers(0, 10))] = np.nan  # rows without an error yet
        kw = dict(
            start=int(rng.integers(0, n)), short_window=int(rng.integers(1, 12)), long_window=int(rng.integers(2, 300)),
            min_history=int(rng.integers(2, 30)), suppress=int(rng.integers(0, 50)), tail=tail,
        )
        kw["min_history"] = min(kw["min_history"], kw["long_window"])
        s = anomaly_likelihood(e, **kw)
        assert s.shape == (n,) and np.all(np.isfinite(s)) and np.all((s >= 0.0) & (s < 1.0)), (trial, kw)
        assert np.all(s[: kw["start"]] == 0.0)
        i = int(rng.integers(0, n))
        f = e.copy()
        f[i + 1 :] = np.abs(rng.normal(0.0, 1e6, n - i - 1))
        np.testing.assert_array_equal(anomaly_likelihood(f, **kw)[: i + 1], s[: i + 1], err_msg=f"trial {trial}")


def test_likelihood_ranks_far_tails_without_saturating() -> None:
    z = np.array([0.0, 5.0, 29.0, 31.0, 100.0, 1e4])
    lq = log10_gauss_tail(z)
    assert np.all(np.isfinite(lq)) and np.all(np.diff(lq) < 0)
    assert lq[0] == pytest.approx(np.log10(0.5))
    from scipy.special import log_ndtr  # the test extra's independent reference

    np.testing.assert_allclose(lq, log_ndtr(-z) / np.log(10.0), rtol=1e-9)  # both sides of z = 30
    calm = np.ones(200) + np.random.default_rng(0).normal(0, 0.1, 200)
    for tail in ("gauss", "quantile"):
        last = [anomaly_likelihood(np.r_[calm, big], min_history=50, tail=tail)[-1] for big in (5.0, 50.0, 500.0, 5e4)]
        assert 0.0 < last[0] < last[1] < last[2] < last[3] < 1.0, (tail, last)  # enormous, still ordered


def test_repeats_are_suppressed() -> None:
    e = np.r_[np.ones(300), 40.0, 40.0, 39.0, np.ones(100), 45.0] + np.random.default_rng(0).normal(0, 0.05, 404)
    raw = anomaly_likelihood(e, suppress=0)
    s = anomaly_likelihood(e, suppress=50, damping=0.5)
    assert raw[300] > 0.9 and raw[301] > 0.5 and raw[302] > 0.5  # all three records are surprising
    assert s[300] == raw[300]  # the first fires
    assert s[301] == 0.5 * raw[301] and s[302] == 0.5 * raw[302]  # its repeats are damped
    assert s[-1] == raw[-1] > 0.5  # a new burst, more than 50 records later, fires again
    assert np.all(anomaly_likelihood(e, suppress=50, damping=0.0)[301:303] == 0.0)


# behaviour -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "autoencoder"])
def test_obvious_spike_after_probation_scores_highest(kind: str) -> None:
    """Default parameters (the NAB-tuned ones)."""
    x = wave(1200, seed=2)
    spike = 900
    x[spike] += 60.0
    scores = nab_file(resolve_detector(kind)(), series(x))
    assert probation_rows(1200) == 180
    # The spike is the file's highest score. A forecaster misses twice on a one-record spike: on the spike, and
    # on the record after it (its input window now holds the spike, and it predicts from there); that second
    # miss is as large, so for it the top may fall on the record after, as long as nothing else comes close.
    top = int(np.argmax(scores))
    assert top == spike or (kind == "lstm" and top == spike + 1), (kind, np.argsort(scores)[-5:])
    rest = np.delete(scores, [spike, spike + 1])
    assert scores[spike] > 1.2 * rest.max(), (kind, scores[spike], rest.max())


# the ensemble ---------------------------------------------------------------------------------------------------


def test_ensemble_is_the_max_of_its_members_likelihoods_suppressed_once() -> None:
    """With the seasonal deviation, the pattern novelty, range novelty and the final suppression off, an ensemble's score is
    suppress_repeats(max over members of each member's undamped likelihood, as that member alone computes it),
    with the ensemble's window and damping."""
    x = wave(900, seed=7)
    x[700:705] += 25.0
    P = probation_rows(900)
    ens = MAKERS["ensemble"](novelty_level=0.0, seasonal_days=0, pattern_bins=0, final_suppress=0.0)
    got = nab_file(ens, series(x))
    alone = [type(m)(**{**m.params.model_dump(), "suppress": 0}) for m in ens.members]
    r = np.max([nab_file(m, series(x)) for m in alone], axis=0)  # suppression off: each member's r
    want = suppress_repeats(r, ens.suppress_rows(900), ens.params.damping)
    want[:P] = 0.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # the stacked model rounds in another order
    assert set(np.flatnonzero(got > 0.8)) <= set(range(700, 706)) and got[700:706].max() == got.max()  # the anomaly on top


def test_ensemble_novelty_scores_a_new_extreme_once_per_quiet_span() -> None:
    x = wave(900, seed=8)
    x[600] = x.max() + 5.0  # beyond anything seen: novelty fires
    x[610] = x[600] + 1.0  # a second new maximum 10 rows later, inside the quiet span: silent
    P = probation_rows(900)
    ens = MAKERS["ensemble"](novelty_level=0.8, novelty_quiet=1.0)
    values = series(x).values
    nov = ens.combination(P, 900).novelty.update_many(values)
    quiet = ens.suppress_rows(900)
    assert 0.8 <= nov[600] < 0.9 and not nov[601 : 601 + quiet].any() and not nov[P:600].any()
    chunks = ens.combination(P, 900).novelty
    np.testing.assert_array_equal(np.concatenate([chunks.update_many(values[a : a + 77]) for a in range(0, 900, 77)]), nov)
    assert nab_file(ens, series(x))[600] >= nov[600]
    assert not MAKERS["ensemble"](novelty_level=0.0).combination(P, 900).novelty.update_many(values).any()


def test_ensemble_seasonal_deviation_sees_a_record_unlike_the_same_time_on_earlier_days() -> None:
    """A daily pattern (5-minute records) whose one hour on day 5 is flattened to the day's mean: within the
    range seen and smooth, but unlike that hour on the three days before. The seasonal ratio peaks there; with
    seasonal_days 0 it is 0 everywhere; chunks agree with the whole file."""
    from harness.detectors.ensemble import SeasonalDeviation
    from harness.detectors.likelihood import StreamingLikelihood

    n, day = 288 * 8, 288
    rng = np.random.default_rng(3)
    x = 10 * np.sin(2 * np.pi * np.arange(n) / day) + rng.normal(0, 0.3, n)
    hour = slice(5 * day + 60, 5 * day + 72)  # at the crest of the wave
    x[hour] = 0.0
    s = series(x)
    P = probation_rows(n)

    def seasonal(days: int, chunk: int) -> np.ndarray:
        dev = SeasonalDeviation(P, days, StreamingLikelihood(start=P, min_history=100, long_window=4000, tail="quantile", quantile=0.998, suppress=0))
        return np.concatenate([dev.update_many(s.timestamps[a : a + chunk], s.values[a : a + chunk]) for a in range(0, n, chunk)])

    r = seasonal(3, n)
    assert hour.start <= int(np.argmax(r)) < hour.stop and r[: 4 * day].max() == 0.0  # 3 earlier days, then a day of errors
    np.testing.assert_allclose(seasonal(3, 97), r, rtol=0, atol=1e-12)
    assert not seasonal(0, n).any()
    scores = nab_file(MAKERS["ensemble"](seasonal_days=3), s)
    assert hour.start <= int(np.argmax(scores)) < hour.stop + 2


def test_ensemble_pattern_novelty_sees_a_new_rhythm_inside_the_old_range() -> None:
    """A slow triangle wave whose stretch on the second half starts to flip between its extremes every record:
    every value is within the range seen, but its words (three records' bins) are new. The pattern ratio
    peaks there and nowhere before; pattern_bins 0 turns it off; chunks agree with the whole file."""
    from harness.detectors.ensemble import PatternNovelty
    from harness.detectors.likelihood import StreamingLikelihood

    n = 3000
    rng = np.random.default_rng(5)
    x = np.abs((np.arange(n) % 40) - 20.0) + rng.normal(0, 0.05, n)
    flip = slice(2000, 2030)
    x[flip] = np.where(np.arange(30) % 2, 19.0, 1.0)
    s = series(x)
    P = probation_rows(n)

    def pattern(bins: int, chunk: int) -> np.ndarray:
        nov = PatternNovelty(P, bins, 3, StreamingLikelihood(start=P, min_history=100, long_window=4000, tail="quantile", quantile=0.998, suppress=0))
        return np.concatenate([nov.update_many(s.timestamps[a : a + chunk], s.values[a : a + chunk]) for a in range(0, n, chunk)])

    r = pattern(8, n)
    assert flip.start <= int(np.argmax(r)) < flip.stop and r[P : flip.start].max() < 0.5 * r.max()
    np.testing.assert_allclose(pattern(8, 1), r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pattern(8, 97), r, rtol=0, atol=1e-12)
    assert not pattern(0, n).any()

def test_ensemble_members_are_validated_with_the_scenario() -> None:
    with pytest.raises(ValidationError, match="windw"):
        Ensemble.Params.model_validate({"members": [{"type": "autoencoder", "params": {"windw": 3}}]})
    with pytest.raises(ValidationError, match="members"):
        Ensemble.Params.model_validate({"members": []})
    with pytest.raises(ValidationError):
        Ensemble.Params.model_validate({"members": [{"type": "windowedGaussian"}]})


# registry ------------------------------------------------------------------------------------------------------


def test_registry_is_lazy_and_resolves() -> None:
    code = (
        "import sys, harness.detectors as d; "
        "assert 'lstm' in d.DETECTORS and 'autoencoder' in d.DETECTORS; "
        "assert sorted(d.DETECTORS) == ['autoencoder', 'ensemble', 'lstm', 'null', 'random', 'windowedGaussian']; "
        "assert 'torch' not in sys.modules, 'importing harness.detectors imported torch'; "
        "cls = d.resolve_detector('lstm'); assert 'torch' not in sys.modules, 'resolving lstm imported torch'; "
        "cls().build_model(); assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert resolve_detector("lstm") is LSTMForecaster and DETECTORS["autoencoder"] is DenseAutoencoder
    assert issubclass(LSTMForecaster, LearnedDetector) and "nope" not in DETECTORS
    with pytest.raises(Exception):
        LSTMForecaster(windw=3)


# backends -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_use_backend_prepares_each_files_model_once_and_fp32_matches_torch(kind: str, tmp_path) -> None:
    files = [series(wave(600, seed=s), name=f"cat/f{s}.csv") for s in range(2)]
    reference = [nab_file(MAKERS[kind](), f) for f in files]
    det = MAKERS[kind]()
    det.use_backend({"backend": "onnxruntime", "precision": "fp32"}, cache_dir=str(tmp_path))
    for f, ref in zip(files, reference):
        np.testing.assert_allclose(nab_file(det, f), ref, atol=1e-5)
        assert det.last_compiled.info["backend"] == "onnxruntime"
    assert len(det.prepared) == 2  # one per file: each file trains its own model
    summary = det.backend_summary()
    assert summary["models_prepared"] == 2 and summary["check_max_abs_err"] <= 1e-5
    windows = det.scored_windows()
    assert windows.shape == (600 - probation_rows(600), det.last_calibration.shape[1]) and windows.dtype == np.float32
    np.testing.assert_allclose(det.last_compiled.infer(windows[:4]), det.infer(det.last_model, windows[:4]))
