"""Threshold policies, each a small object that turns one stream's scores into alerts causally: the alert at
record i depends on the scores of records <= i only (and on their timestamps).

- `fixed`: an alert when the score reaches a given value.
- `rolling_quantile`: an alert when the score exceeds the q-quantile of the scores of the trailing window of
  event time (e.g. the last 24 h; records strictly earlier than the current one), once `min_history` records
  are in it; the threshold optionally smoothed by an
  exponential moving average. pandas' time-based rolling quantile does the work (closed on the left: the
  current record is judged against the ones before it).
- `spot`: peaks over threshold (Siffer et al., KDD 2017): the first `n_init` records set an initial threshold
  (their `init_level` quantile) and the excesses over it are fitted with a generalised Pareto tail; a record is
  an alert when it exceeds the tail's `risk` quantile, else an excess is added to the tail, which is refitted.
  `drift: true` is DSPOT: the same on each score minus the mean of the `depth` records before it. The tail is
  fitted by the method of moments (closed form, O(1) per new excess), so a long stream costs little.

`apply(timestamps, scores)` is the fast path over a whole stream; `streaming()` gives the same decisions one
record at a time (`step(t, score) -> bool`) for a live service.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class ThresholdPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ClassVar[str]

    def apply(self, timestamps: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Alerts (bool per record) over one stream, in order."""
        step = self.streaming()
        return np.fromiter((step(t, s) for t, s in zip(timestamps, scores)), bool, count=len(scores))

    def streaming(self):
        """A function `step(t, score) -> bool` for one stream, record by record."""
        raise NotImplementedError


class Fixed(ThresholdPolicy):
    name: ClassVar[str] = "fixed"
    value: float

    def apply(self, timestamps: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, np.float64) >= self.value

    def streaming(self):
        return lambda t, s: bool(s >= self.value)


class RollingQuantile(ThresholdPolicy):
    name: ClassVar[str] = "rolling_quantile"
    q: float = Field(0.99, gt=0.0, lt=1.0)
    window_s: float = Field(86_400.0, gt=0.0, description="trailing window of event time")
    min_history: int = Field(288, ge=1, description="records in the window before any alert")
    smoothing: float = Field(1.0, gt=0.0, le=1.0, description="EMA weight of each new threshold (1: none)")

    def thresholds(self, timestamps: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The threshold each record is judged against (NaN: not enough history yet)."""
        import pandas as pd

        # event time as the stream's clock: a timestamp that steps back (NAB has some) does not move it back
        index = pd.to_datetime(np.maximum.accumulate(np.asarray(timestamps, np.float64)), unit="s")
        series = pd.Series(np.asarray(scores, np.float64), index=index)
        roll = series.rolling(f"{int(self.window_s * 1000)}ms", closed="left", min_periods=self.min_history)
        raw = roll.quantile(self.q, interpolation="linear")
        if self.smoothing < 1.0:
            raw = raw.ewm(alpha=self.smoothing, adjust=False, ignore_na=True).mean().where(raw.notna())
        return raw.to_numpy()

    def apply(self, timestamps: np.ndarray, scores: np.ndarray) -> np.ndarray:
        thr = self.thresholds(timestamps, scores)
        return np.nan_to_num(np.asarray(scores, np.float64) > thr, nan=0.0).astype(bool) & ~np.isnan(thr)

    def streaming(self):
        from collections import deque

        window: deque[tuple[float, float]] = deque()
        smoothed: list[float] = []
        clock = [-math.inf]

        def step(t: float, s: float) -> bool:
            t = clock[0] = max(clock[0], float(t))
            while window and window[0][0] < t - self.window_s:  # the window [t - window_s, t), as pandas' closed="left"
                window.popleft()
            alert = False
            history = [v for tt, v in window if tt < t]  # strictly earlier in event time, as pandas' closed="left"
            if len(history) >= self.min_history:
                thr = float(np.quantile(history, self.q))
                if self.smoothing < 1.0:
                    thr = thr if not smoothed else self.smoothing * thr + (1 - self.smoothing) * smoothed[-1]
                    smoothed.append(thr)
                alert = s > thr
            window.append((t, s))
            return alert

        return step


class _Tail:
    """Excesses over the initial threshold and their generalised Pareto fit (method of moments)."""

    def __init__(self, excesses: np.ndarray):
        self.n = len(excesses)
        self.total = float(np.sum(excesses))
        self.squares = float(np.sum(excesses**2))

    def add(self, excess: float) -> None:
        self.n += 1
        self.total += excess
        self.squares += excess * excess

    def quantile(self, t: float, risk: float, seen: int) -> float:
        """The level exceeded with probability `risk`, given `seen` records so far (Siffer et al., eq. 1)."""
        if self.n < 2:
            return math.inf
        mean = self.total / self.n
        var = max(self.squares / self.n - mean * mean, 1e-18)
        gamma = 0.5 * (1.0 - mean * mean / var)
        sigma = 0.5 * mean * (mean * mean / var + 1.0)
        r = risk * seen / self.n
        if r >= 1.0:  # excesses are rarer than the risk asked for: the risk's level lies below t itself
            return t
        if abs(gamma) < 1e-9:
            return t - sigma * math.log(r)
        power = -gamma * math.log(r)
        return math.inf if power > 700 else t + sigma / gamma * (math.exp(power) - 1.0)


class Spot(ThresholdPolicy):
    name: ClassVar[str] = "spot"
    risk: float = Field(1e-4, gt=0.0, lt=1.0, description="probability of an alert under the fitted tail")
    n_init: int = Field(1000, ge=20, description="records that set the initial threshold (no alerts among them)")
    init_level: float = Field(0.98, gt=0.5, lt=1.0, description="quantile of those records: the initial threshold")
    drift: bool = Field(False, description="DSPOT: judge each score minus the mean of the `depth` records before it")
    depth: int = Field(50, ge=1)

    def _deviations(self, scores: np.ndarray) -> np.ndarray:
        x = np.asarray(scores, np.float64)
        if not self.drift:
            return x
        csum = np.concatenate([[0.0], np.cumsum(x)])
        i = np.arange(len(x))
        lo = np.maximum(i - self.depth, 0)
        count = np.maximum(i - lo, 1)
        mean_before = (csum[i] - csum[lo]) / count
        return np.where(i > 0, x - mean_before, 0.0)

    def apply(self, timestamps: np.ndarray, scores: np.ndarray) -> np.ndarray:
        x = self._deviations(scores)
        alerts = np.zeros(len(x), bool)
        if len(x) <= self.n_init:
            return alerts
        init = x[: self.n_init]
        t = float(np.quantile(init, self.init_level))
        tail = _Tail(init[init > t] - t)
        seen = self.n_init
        z = tail.quantile(t, self.risk, seen)
        candidates = np.flatnonzero(x[self.n_init :] > t) + self.n_init  # only these can alert or feed the tail
        for i in candidates:
            if x[i] > z:
                alerts[i] = True
            else:
                tail.add(x[i] - t)
                z = tail.quantile(t, self.risk, self.n_init + (i - self.n_init) + 1)
        return alerts

    def streaming(self):
        from collections import deque

        recent: deque[float] = deque(maxlen=self.depth)
        init: list[float] = []
        state: dict[str, Any] = {"seen": 0, "t": math.inf, "z": math.inf, "tail": None}

        def step(t_: float, s: float) -> bool:
            x = (s - sum(recent) / len(recent) if recent else 0.0) if self.drift else float(s)
            recent.append(float(s))
            state["seen"] += 1
            if state["seen"] <= self.n_init:
                init.append(x)
                if state["seen"] == self.n_init:
                    values = np.asarray(init)
                    state["t"] = float(np.quantile(values, self.init_level))
                    state["tail"] = _Tail(values[values > state["t"]] - state["t"])
                    state["z"] = state["tail"].quantile(state["t"], self.risk, self.n_init)
                return False
            if x <= state["t"]:
                return False
            if x > state["z"]:
                return True
            state["tail"].add(x - state["t"])
            state["z"] = state["tail"].quantile(state["t"], self.risk, state["seen"])
            return False

        return step


POLICIES: dict[str, type[ThresholdPolicy]] = {p.name: p for p in (Fixed, RollingQuantile, Spot)}
