import time

import numpy as np

from harness.timing import measure


def test_measure_meets_both_minimums_and_reports_percentiles_of_raw_samples():
    calls = []

    def slow(batch):
        calls.append(len(batch))
        time.sleep(0.002)

    lat = measure(slow, np.zeros((8, 4), np.float32), warmup=3, min_iterations=20, min_duration_s=0.1)
    assert lat.iterations >= 20 and lat.duration_s >= 0.1
    assert len(calls) == lat.iterations + 3
    assert all(c == 8 for c in calls)
    assert 2.0 <= lat.min_ms <= lat.p50_ms <= lat.p95_ms
    assert lat.events_per_s == 8 / (lat.p50_ms / 1000)


def test_measure_stops_at_min_iterations_when_calls_are_slow_enough():
    lat = measure(lambda b: time.sleep(0.03), np.zeros((1, 4)), warmup=0, min_iterations=5, min_duration_s=0.1)
    assert 5 <= lat.iterations <= 6
