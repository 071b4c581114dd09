"""`measure` and `time_batches` on a clock the timed call advances (no sleeping: exact figures on a busy machine),
and once on the real clock, where only lower bounds hold."""

import time
from types import SimpleNamespace

import numpy as np
import pytest

import harness.timing
from harness.timing import measure, time_batches

pytestmark = pytest.mark.timeout(30)  # in-process timing on a stand-in clock: seconds at most


class Clock:
    """A stand-in for `time` in harness.timing: it moves only when a timed call says how long it took."""

    def __init__(self) -> None:
        self.ns = 0

    def advance(self, ns: int) -> None:
        self.ns += ns

    def perf_counter(self) -> float:
        return self.ns / 1e9

    def perf_counter_ns(self) -> int:
        return self.ns


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(harness.timing, "time", SimpleNamespace(perf_counter=c.perf_counter, perf_counter_ns=c.perf_counter_ns))
    return c


def test_measure_meets_both_minimums_and_reports_percentiles_of_raw_samples(clock: Clock):
    calls = []

    def call(batch):
        calls.append(len(batch))
        clock.advance(2_500_000)  # 2.5 ms a call

    lat = measure(call, np.zeros((8, 4), np.float32), warmup=3, min_iterations=20, min_duration_s=0.1)
    assert lat.summary.count == 40 and lat.duration_s == pytest.approx(0.1)  # 0.1 s of 2.5 ms calls, past 20
    assert calls == [8] * 43  # the 3 warm-up calls too
    assert lat.summary.min == lat.p50_ms == lat.summary.max == 2.5
    assert lat.events_per_s == 3200.0  # 8 events per 2.5 ms


def test_measure_on_the_real_clock_times_at_least_the_call():
    lat = measure(lambda b: time.sleep(0.002), np.zeros((8, 4), np.float32), warmup=1, min_iterations=20, min_duration_s=0.1)
    assert lat.summary.count >= 20 and lat.duration_s >= 0.1
    assert 2.0 <= lat.summary.min <= lat.p50_ms <= lat.summary.p90 <= lat.summary.p95 <= lat.summary.p99 <= lat.summary.max


def test_measure_stops_at_min_iterations_when_calls_are_slow_enough():
    lat = measure(lambda b: time.sleep(0.03), np.zeros((1, 4)), warmup=0, min_iterations=5, min_duration_s=0.1)
    assert 5 <= lat.summary.count <= 6


def test_time_batches_alternates_rounds_and_pools_raw_samples(clock: Clock):
    seen = []

    def call(batch):
        seen.append(len(batch))
        clock.advance(1_000_000 if len(seen) <= 22 else 4_000_000)  # the machine slows down after round 1

    windows = np.arange(30, dtype=np.float32).reshape(10, 3)
    out = time_batches(call, windows, batch=16, warmup=1, min_iterations=10, min_duration_s=0.0, rounds=2)
    # round 1: batch 1 then batch 16, round 2 the same, each after one warm-up call
    assert seen == [1] * 11 + [16] * 11 + [1] * 11 + [16] * 11
    one, big = out["batch1"], out["batchN"]
    assert one["batch"] == 1 and big["batch"] == 16
    assert one["iterations"] == big["iterations"] == 20
    assert one["rounds_p50_ms"] == big["rounds_p50_ms"] == [1.0, 4.0]
    assert big["p50_ms"] == 2.5 and big["min_ms"] == 1.0 and big["max_ms"] == 4.0  # ten samples of each, pooled
    assert big["spread_pct"] == 120.0  # (4 - 1) / 2.5: the slow-down shows as spread
    assert big["duration_s"] == pytest.approx(0.05)  # 10 x 1 ms + 10 x 4 ms, warm-ups not counted
    assert "samples_ms" not in big and big["events_per_s"] == 6400.0 and one["events_per_s"] == 400.0


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
