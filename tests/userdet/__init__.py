"""User-style detectors loaded by import path (`userdet:Class`): a package, so the runner can ship it to Ray workers in the run tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from harness.detectors import StreamingDetector
from harness.detectors.learned import LearnedDetector, sliding


class Exploding(StreamingDetector):
    """Fails on the first file: a failed cell must be recorded while the run goes on."""

    def score_file(self, series, probation):
        raise RuntimeError(f"boom on {series.name}")


class JumpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gain: float = 1.0  # any sign: only its magnitude matters


class LastValueJump(StreamingDetector):
    """|x_i - x_{i-1}| squashed to [0, 1): causal, deterministic, and better than chance on spikes."""

    Params = JumpParams

    def score_file(self, series, probation):
        return jumps(series.values)


def jumps(x: np.ndarray) -> np.ndarray:
    d = np.abs(np.diff(x, prepend=x[0]))
    scale = np.maximum.accumulate(d) + 1e-9
    return d / scale * 0.999


class SlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 0.2  # per file
    tag: str = ""  # only to make several cells
    hold_file: str = ""  # while this file exists: write our PID to pid_file and wait (to be killed)
    pid_file: str = ""
    hold_where: str = ""  # NAME=VALUE: hold only in a process with that environment variable (on one node)


class Slow(StreamingDetector):
    """LastValueJump that takes its time: a cell that is still running when a test interrupts the run, or whose
    worker a test kills."""

    Params = SlowParams

    def score_file(self, series, probation):
        p = self.params
        name, _, value = p.hold_where.partition("=")
        if p.hold_file and Path(p.hold_file).exists() and (not name or os.environ.get(name) == value):
            Path(p.pid_file).write_text(str(os.getpid()))
            while Path(p.hold_file).exists():
                time.sleep(0.1)
        time.sleep(p.seconds)
        return jumps(series.values)


class HogParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    megabytes: int = 4096  # held at once, allocated 64 MB every 0.1 s (the pace of a growing model or buffer)
    tag: str = ""


class Hog(StreamingDetector):
    """Allocates (and touches) `megabytes` before scoring: on a node with less memory, its worker is killed."""

    Params = HogParams

    def score_file(self, series, probation):
        held = []
        for _ in range(self.params.megabytes // 64):
            held.append(np.ones(64 * 2**20 // 8))
            time.sleep(0.1)
        return jumps(series.values)


class LinearForecaster(LearnedDetector):
    """A user's own learned model: a linear next-value forecaster over the last `window` records. Only the four
    members a LearnedDetector needs; training, backends, INT8 and the likelihood come from the harness."""

    @property
    def lag(self) -> int:
        return self.params.window

    def build_model(self):
        from torch import nn

        return nn.Sequential(nn.Linear(self.params.window, 8), nn.Tanh(), nn.Linear(8, 1))

    def training_pairs(self, z):
        w = self.params.window
        return np.ascontiguousarray(sliding(z[:-1], w)), np.ascontiguousarray(z[w:, None])

    def errors(self, inputs, outputs, targets):
        return np.abs(np.asarray(outputs, np.float64) - targets).reshape(-1)


class StallParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stall_s: float = 1.0
    after_events: int = 30_000  # events this process scores before its clock starts
    after_s: float = 0.0  # then seconds until its one stall: a time, so it lands in the measured window at any speed


_STALLED: dict = {"events": 0, "since": None, "done": False}  # per process: a shard stalls once, whatever its streams


class Stall(StreamingDetector):
    """Scores 0, and stalls the scoring process once for `stall_s`, `after_s` seconds after its first
    `after_events` events: the coordinated-omission check (an open loop shows the stall in its p99, a closed loop
    hides it)."""

    Params = StallParams

    def score_many(self, timestamps, values):
        _STALLED["events"] += len(values)
        if _STALLED["since"] is None and _STALLED["events"] >= self.params.after_events:
            _STALLED["since"] = time.monotonic()
        if not _STALLED["done"] and _STALLED["since"] is not None and time.monotonic() - _STALLED["since"] >= self.params.after_s:
            _STALLED["done"] = True
            time.sleep(self.params.stall_s)
        return np.zeros(len(values))

    def score_file(self, series, probation):
        return np.zeros(series.n_rows)


class BusyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ms_per_event: float = 1.0


class Busy(StreamingDetector):
    """Scores 0 after holding its process `ms_per_event` per event (a sleep: a service whose capacity is known, at
    no cost to the test machine's cores): what overload does to a service, without a real model."""

    Params = BusyParams

    def score_many(self, timestamps, values):
        time.sleep(len(values) * self.params.ms_per_event / 1000)
        return np.zeros(len(values))

    def score_file(self, series, probation):
        return np.zeros(series.n_rows)

