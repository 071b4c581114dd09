import time

import numpy as np

from harness.timing import measure, time_batches


def test_measure_meets_both_minimums_and_reports_percentiles_of_raw_samples():
    calls = []

    def slow(batch):
        calls.append(len(batch))
        time.sleep(0.002)

    lat = measure(slow, np.zeros((8, 4), np.float32), warmup=3, min_iterations=20, min_duration_s=0.1)
    assert lat.summary.count >= 20 and lat.duration_s >= 0.1
    assert len(calls) == lat.summary.count + 3
    assert all(c == 8 for c in calls)
    assert 2.0 <= lat.summary.min <= lat.p50_ms <= lat.summary.p90 <= lat.summary.p95 <= lat.summary.p99 <= lat.summary.max
    assert lat.events_per_s == 8 / (lat.p50_ms / 1000)


def test_measure_stops_at_min_iterations_when_calls_are_slow_enough():
    lat = measure(lambda b: time.sleep(0.03), np.zeros((1, 4)), warmup=0, min_iterations=5, min_duration_s=0.1)
    assert 5 <= lat.summary.count <= 6


def test_time_batches_alternates_rounds_and_pools_raw_samples():
    seen = []

    def call(batch):
        seen.append(len(batch))
        time.sleep(0.001 if len(seen) <= 22 else 0.004)  # the machine slows down after round 1

    windows = np.arange(30, dtype=np.float32).reshape(10, 3)
    out = time_batches(call, windows, batch=16, warmup=1, min_iterations=10, min_duration_s=0.0, rounds=2)
    # round 1: batch 1 then batch 16, round 2 the same, each after one warm-up call
    assert seen == [1] * 11 + [16] * 11 + [1] * 11 + [16] * 11
    one, big = out["batch1"], out["batchN"]
    assert one["batch"] == 1 and big["batch"] == 16
    assert one["iterations"] == big["iterations"] == 20
    assert len(big["rounds_p50_ms"]) == 2 and big["rounds_p50_ms"][1] > 2 * big["rounds_p50_ms"][0]
    assert big["spread_pct"] > 50  # the slow-down shows as spread
    assert min(big["rounds_p50_ms"]) <= big["p50_ms"] <= max(big["rounds_p50_ms"])
    assert "samples_ms" not in big and big["events_per_s"] == 16 / (big["p50_ms"] / 1000)


def test_time_batches_repeats_windows_up_to_the_large_batch():
    shapes = []
    windows = np.arange(6, dtype=np.float32).reshape(3, 2)
    time_batches(lambda b: shapes.append(b.copy()), windows, batch=7, warmup=0, min_iterations=1, min_duration_s=0.0, rounds=1)
    assert shapes[0].tolist() == [[0, 1]]
    assert shapes[1].tolist() == [[0, 1], [2, 3], [4, 5], [0, 1], [2, 3], [4, 5], [0, 1]]


def test_time_batches_sweeps_more_batch_sizes_after_the_rounds():
    seen = []
    windows = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = time_batches(lambda b: seen.append(len(b)), windows, batch=4, warmup=0, min_iterations=3, min_duration_s=0.0,
                       rounds=1, sweep=[2, 64])
    assert seen == [1] * 3 + [4] * 3 + [2] * 3 + [64] * 3
    assert sorted(out["sweep"]) == [2, 64] and out["sweep"][64]["batch"] == 64 and out["sweep"][64]["iterations"] == 3
    assert time_batches(lambda b: None, windows, batch=4, warmup=0, min_iterations=1, min_duration_s=0.0, rounds=1)["sweep"] == {}
