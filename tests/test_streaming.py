"""Record by record equals the vectorised path, on a sample of NAB files, for every built-in detector
(benchmarks/bench_streaming_equivalence.py runs the same comparison on every NAB file).

`score_file` is the fast path a run takes; `start` / `score_one` / `learn_one` is what a live stream (and the Ray
Serve deployment) takes. They must give the same scores. The tolerances, and why:

- null, random: identical (the same numbers drawn in the same order).
- windowedGaussian: 1e-9. The vectorised path takes means and deviations from pandas' rolling sums, the streaming
  one from the window itself; they differ by float rounding only.
- learned detectors (lstm, autoencoder): 1e-5 on every row but damping near-ties, and those are rare. Inference
  runs at batch 1 instead of batches of 1024, and float32 matrix products round differently with the batch size
  and with a window's position in the batch (outputs differ by up to ~1e-6 relative); through the anomaly
  likelihood that stays below 1e-5 in [0, 1). But the likelihood damps a record that does not exceed the recent
  maximum, a hard comparison: where two records are equally surprising up to that rounding (repeated identical
  patterns, frequent in NAB's artificial files), one path may damp a record the other does not, and that row's
  scores differ by the factor `damping`. Every such row must be a near-tie (within 1e-5 relative) in the
  vectorised path, and fewer than 0.2% of the rows. Measured on this machine over all 365,558 NAB rows: on
  ONNX Runtime fp32 (what this test runs) both detectors give identical scores, 0 rows differ; on torch eager,
  which rounds batch 1 and batch 1024 differently, the LSTM differs by at most 4.5e-7 and no row flips, the
  autoencoder by at most 3.5e-8 off near-ties and 26 near-tie rows (0.007%) are damped in one path only.

The learned detectors run here with small models and one epoch on ONNX Runtime fp32 (the pipeline is what is
compared, not the model's quality), each in its own process so the two cores share the work.

The test's SAMPLE: the artificial files whose repeated identical patterns make damping near-ties (the square wave,
the noiseless daily cycle, the flatline), a jump, and the real files where the full comparison finds its largest
differences (the benchmark lists each detector's worst files; on ONNX Runtime fp32 no file has a near-tie row).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

from harness.detectors.likelihood import StreamingLikelihood, anomaly_likelihood

from conftest import NAB, needs_nab

SMALL = {
    "lstm": {"window": 8, "hidden": 8, "epochs": 1},
    "autoencoder": {"window": 8, "hidden": 8, "bottleneck": 3, "epochs": 1},
}
TOLERANCE = {"null": 0.0, "random": 0.0, "windowedGaussian": 1e-9, "lstm": 1e-5, "autoencoder": 1e-5}
NEAR_TIE = 1e-5  # relative distance of a record's undamped score to the recent maximum
MAX_TIE_SHARE = 0.002
SAMPLE = [
    "artificialNoAnomaly/art_daily_perfect_square_wave.csv",
    "artificialNoAnomaly/art_daily_no_noise.csv",
    "artificialNoAnomaly/art_flatline.csv",
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realAWSCloudwatch/ec2_network_in_257a54.csv",  # windowedGaussian's largest difference (6.9e-11)
    "realAWSCloudwatch/grok_asg_anomaly.csv",  # windowedGaussian(window 6400)'s largest difference (5.5e-14)
]
CASES = [("null", {}), ("random", {"seed": 3}), ("windowedGaussian", {}), ("windowedGaussian", {"window": 6400})]


def near_ties(detector, n_rows: int, P: int) -> np.ndarray:
    """Rows whose undamped likelihood, in the vectorised run just made, is within NEAR_TIE of the recent maximum."""
    r = detector.ratios(detector.last_errors, P, n_rows)
    prev = pd.Series(r).shift(1).rolling(max(detector.suppress_rows(n_rows), 1), min_periods=1).max().fillna(-np.inf).to_numpy()
    return np.abs(r - prev) <= NEAR_TIE * np.abs(prev)


def compare(kind: str, params: dict, backend: dict | None = None, cache: str | None = None,
            files: list[str] | None = None) -> dict:
    """Over the NAB files named (every one if None): the largest |score_file - record by record| off near-ties,
    and the near-tie rows where the two differ; `per_file`: each file's worst difference and near-tie rows."""
    from harness.corpus.layout import load_corpus
    from harness.detectors import StreamingDetector, resolve_detector
    from harness.scoring.nab import probation_rows

    def make():
        det = resolve_detector(kind)(**params)
        if backend is not None:
            det.use_backend(backend, cache)
        return det

    out = {"worst": 0.0, "where": "", "tie_rows": 0, "rows": 0, "not_a_tie": [], "per_file": {}}
    corpus = load_corpus(NAB).files
    chosen = corpus if files is None else [f for f in corpus if f.name in files]
    assert files is None or sorted(f.name for f in chosen) == sorted(files), "a sampled file is not in the corpus"
    for f in chosen:
        P = probation_rows(f.n_rows)
        fast_det = make()
        fast = fast_det.score_file(f, P)
        slow = StreamingDetector.score_file(make(), f, P)
        assert fast.shape == slow.shape == (f.n_rows,)
        d = np.abs(fast - slow)
        out["rows"] += f.n_rows
        tie_rows = 0
        if kind in SMALL:
            off = d > TOLERANCE[kind]
            ties = near_ties(fast_det, f.n_rows, P)
            damped = np.isclose(np.minimum(fast, slow), fast_det.params.damping * np.maximum(fast, slow), rtol=1e-4, atol=1e-9)
            tie_rows = int(np.sum(off & ties & damped))
            out["not_a_tie"] += [(f.name, int(i), float(fast[i]), float(slow[i])) for i in np.flatnonzero(off & ~(ties & damped))[:3]]
            d = np.where(off & ties & damped, 0.0, d)
        out["tie_rows"] += tie_rows
        out["per_file"][f.name] = (float(d.max()), tie_rows)
        if d.max() > out["worst"]:
            out["worst"], out["where"] = float(d.max()), f.name
    return out


def disagreements(kind: str, params: dict, got: dict) -> list[str]:
    """What breaks the tolerances above, one line each; empty when the two paths agree."""
    bad = []
    if got["not_a_tie"]:
        bad.append(f"{kind} {params}: rows that differ but are no damping near-tie: {got['not_a_tie']}")
    if got["worst"] > TOLERANCE[kind]:
        bad.append(f"{kind} {params}: {got['worst']:.3g} on {got['where']} (tolerance {TOLERANCE[kind]:g})")
    if got["tie_rows"] > MAX_TIE_SHARE * got["rows"]:
        bad.append(f"{kind} {params}: {got['tie_rows']} near-tie rows of {got['rows']} (limit {MAX_TIE_SHARE:.1%})")
    return bad


def compare_all(cache: str, files: list[str] | None) -> dict[tuple[str, str], dict]:
    """Every case and learned detector over `files`, the learned ones in other processes; by (kind, params)."""
    backend = {"backend": "onnxruntime", "precision": "fp32"}
    with ProcessPoolExecutor(2) as pool:
        learned = {kind: pool.submit(compare, kind, params, backend, cache, files) for kind, params in SMALL.items()}
        got = {(kind, repr(params)): compare(kind, params, files=files) for kind, params in CASES}
        got.update({(kind, repr(SMALL[kind])): future.result() for kind, future in learned.items()})
    return got


@needs_nab
def test_record_by_record_equals_score_file_on_a_sample_of_nab_files(tmp_path) -> None:
    got = compare_all(str(tmp_path), SAMPLE)
    assert len(got) == len(CASES) + len(SMALL)
    for (kind, params), figures in got.items():
        assert sorted(figures["per_file"]) == sorted(SAMPLE), kind
        assert not disagreements(kind, params, figures), disagreements(kind, params, figures)


def random_errors(rng: np.random.Generator, longest: int) -> tuple[np.ndarray, dict]:
    """A random error stream (NaNs first, zeros, heavy tails, any scale) and random likelihood settings."""
    n = int(rng.integers(5, longest))
    e = np.abs(rng.standard_t(2, n)) * rng.choice([1e-6, 1.0, 1e4])
    e[rng.random(n) < 0.2] = 0.0
    e[: int(rng.integers(0, 10))] = np.nan
    kw = dict(
        start=int(rng.integers(0, n)), short_window=int(rng.integers(1, 12)), long_window=int(rng.integers(2, 300)),
        min_history=int(rng.integers(2, 30)), suppress=int(rng.integers(0, 50)), tail=str(rng.choice(["gauss", "quantile"])),
        quantile=float(rng.choice([0.5, 0.99, 0.995, 1.0])), damping=float(rng.choice([0.0, 0.5])),
    )
    kw["min_history"] = min(kw["min_history"], kw["long_window"])
    return e, kw


def test_streaming_likelihood_equals_the_vectorised_one() -> None:
    """The incremental likelihood against pandas' rolling windows, over random error streams with NaNs, zeros,
    heavy tails and every parameter moving: equal to float rounding (measured worst 8e-13)."""
    rng = np.random.default_rng(11)
    for trial in range(300):
        e, kw = random_errors(rng, 500)
        stream = StreamingLikelihood(**kw)
        np.testing.assert_allclose([stream.update(v) for v in e], anomaly_likelihood(e, **kw), rtol=0, atol=1e-10, err_msg=f"trial {trial}: {kw}")


def test_the_likelihood_in_chunks_equals_it_record_by_record() -> None:
    """`update_many` (a service's chunk of one stream's events) against `update` one by one, over random error
    streams cut into random chunks, some chunks fed one by one in between: equal to float rounding (measured
    worst 1.1e-13)."""
    rng = np.random.default_rng(12)
    for trial in range(300):
        e, kw = random_errors(rng, 800)
        n = len(e)
        one = StreamingLikelihood(**kw)
        want = [one.update(v) for v in e]
        mixed = StreamingLikelihood(**kw)
        cuts = np.sort(rng.choice(np.arange(1, n), min(n - 1, int(rng.integers(0, 12))), replace=False))
        got = []
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, n]):
            chunk = e[a:b]
            got += [mixed.update(v) for v in chunk] if rng.random() < 0.3 else mixed.update_many(chunk).tolist()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, err_msg=f"trial {trial}: {kw}")


LIVE = {**SMALL, "ensemble": {"members": [{"type": "autoencoder", "params": SMALL["autoencoder"]}, {"type": "lstm", "params": SMALL["lstm"]}]}}


@pytest.mark.parametrize("kind", sorted(LIVE))
def test_a_stream_needs_no_file_and_no_length(kind: str) -> None:
    """A live stream: records arrive one by one with only the stream's name and probation; without a known
    length the likelihood suppresses over its full `suppress` span, which is what score_file uses for a file
    long enough to reach the cap."""
    from harness.corpus.layout import SeriesFile
    from harness.detectors import Stream, resolve_detector

    rng = np.random.default_rng(0)
    n = 12_000  # 4% of it is 480 > suppress (400): the cap applies either way
    x = 10 * np.sin(np.arange(n) / 20) + rng.normal(0, 1, n)
    x[9000] += 25
    stamps = np.datetime64("2026-01-01T00:00:00", "s") + np.arange(n) * np.timedelta64(60, "s")
    f = SeriesFile("live/one.csv", n, np.zeros((0, 2), np.int64), stamps, x)
    det = resolve_detector(kind)(**LIVE[kind])
    det.start(Stream("live/one.csv", probation=750))
    live = []
    for t, v in zip(stamps, x.tolist()):
        live.append(det.score_one(t, v))
        det.learn_one(t, v)
    np.testing.assert_allclose(live, resolve_detector(kind)(**LIVE[kind]).score_file(f, 750), rtol=0, atol=1e-5)
    assert int(np.argmax(live)) in (9000, 9001)


def test_a_chunk_reads_a_high_quantile_from_the_windows_top_values_as_pandas_computes_it() -> None:
    """harness.detectors.rolling_quantile against pandas' `shift(1).rolling(L).quantile(q)` over the chunk, on
    random series with NaNs, zeros, ties, heavy tails and young streams (history shorter than the window): the
    same numbers to the last bit where it applies, and it applies to most high quantiles (None: pandas' path)."""
    import pandas as pd

    from harness.detectors.rolling_quantile import chunk_quantiles, top_ranks

    rng = np.random.default_rng(3)
    applied = 0
    for trial in range(800):
        L, k, start = int(rng.integers(2, 500)), int(rng.integers(1, 1500)), int(rng.integers(0, 700))
        q = float(rng.choice([0.9, 0.99, 0.995, 0.999, 1.0]))
        min_periods = int(rng.integers(1, min(L, 50) + 1))
        h = np.abs(rng.standard_t(2, start + k)) * rng.choice([1e-6, 1.0, 1e4])
        h[rng.random(len(h)) < 0.2] = 0.0
        h[rng.random(len(h)) < 0.05] = np.nan
        if rng.random() < 0.2:
            h = np.round(h, 1)
        got = chunk_quantiles(h, start, L, q, min_periods, top_ranks(L, q))
        want = pd.Series(h).shift(1).rolling(L, min_periods=min_periods).quantile(q).to_numpy()[start:]
        if got is not None:
            applied += 1
            np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}: L={L} k={k} start={start} q={q}")
    assert applied > 400, applied


def test_the_block_window_maximum_is_every_window_s_maximum() -> None:
    """harness.detectors.likelihood.window_max (the chunked suppression's) against each window's own max, widths
    from 1 to the series' length, with -inf (no peak) and ties. pandas 3's rolling max counts -inf as missing, so
    a window of only -inf was NaN there and the first record of a stream's first chunk was damped, unlike
    `update` record by record and unlike the whole-file path (its fillna(-inf))."""
    from harness.detectors.likelihood import StreamingSuppression, window_max

    rng = np.random.default_rng(4)
    for trial in range(100):
        n = int(rng.integers(1, 2000))
        w = int(rng.integers(1, n + 1))
        a = np.round(rng.random(n), int(rng.integers(1, 4)))
        a[rng.random(n) < 0.1] = -np.inf
        want = np.array([a[i : i + w].max() for i in range(n - w + 1)])
        np.testing.assert_array_equal(window_max(a, w), want, err_msg=f"trial {trial}: n={n} w={w}")
    r = np.array([0.5, 0.2, 0.7] + [0.1] * 20)
    one = StreamingSuppression(10, 0.5)
    np.testing.assert_array_equal(StreamingSuppression(10, 0.5).update_many(r), [one.update(x) for x in r])
