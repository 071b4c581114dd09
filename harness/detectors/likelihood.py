"""Anomaly likelihood: turns a model's raw per-record errors into scores that rank alike across files.

A raw error means nothing on its own: 0.3 is huge for a clean sine and nothing for a noisy tweet count, and NAB
uses one threshold for the whole corpus. As in Numenta's anomaly likelihood (Ahmad et al. 2017, "Unsupervised
real-time anomaly detection for streaming data"), each record's recent error is compared with the same file's
long history of errors, and the surprise of that comparison is the score. Everything is strictly causal (row i
uses the errors of rows <= i only) and vectorised with pandas' rolling windows (which only ever add the newest
and drop the oldest value, so later rows never touch earlier results).

The formula, for the errors `e` of one file (NaN where a record has no error yet):

    m_i   = mean(e[i-s+1 .. i])                      short moving average, s = `short_window` records
    H_i   = m[i-L .. i-1]                             the history: the previous L = `long_window` averages,
                                                      the current one excluded; rows whose history holds
                                                      fewer than `min_history` values score 0

  tail = "gauss" (Numenta's):
    mu_i, sd_i = mean(H_i), std(H_i) (ddof 0);  sd_i = max(sd_i, `rel_floor` * mu_i, `abs_floor`)
    z_i   = (m_i - mu_i) / sd_i
    q_i   = Q(z_i) = erfc(z_i / sqrt 2) / 2            Gaussian upper tail; the likelihood is 1 - q_i
    x_i   = -log10(q_i) / 10                          Numenta's log scale: likelihood 1 - 1e-10 -> 1

  tail = "quantile" (heavy-tail friendly):
    x_i   = m_i / max(quantile(H_i, `quantile`), `abs_floor`)      the error in units of a high quantile
                                                      of the file's own past errors

  then, for both:
    r_i   = x_i / (1 + x_i)                           into [0, 1) without saturating: extreme records keep
                                                      distinct scores (no ties at 1 for the threshold sweep)
    score = r_i                   if r_i > max(r[i-k .. i-1]) (1 + 1e-9)     (k = `suppress`; 0 disables)
            `damping` * r_i       otherwise

The last step is Numenta's "red zone" filter made threshold-free: a record that does not exceed every score of
the previous k records is damped, so an alert fires once when an anomaly begins instead of on every record while
it lasts (NAB charges every flagged record outside a window). With damping <= 0.5 a damped score stays below 0.5,
under any threshold that matters. The learned detectors scale k with the file's length (`suppress_rows`), as
NAB scales its windows. The margin of 1e-9 (relative) makes a near-tie a tie: the vectorised and the
record-by-record paths round averages differently in the last bits, and whether a record fires must not depend
on which of them ran.

log10 Q is computed without underflow: by erfc for z < 30, and by the asymptotic series
log Q(z) ~ -z^2/2 - log(z sqrt(2 pi)) + log(1 - 1/z^2 + 3/z^4) beyond. Rows before `start` score 0.

`anomaly_likelihood` computes a whole file at once (pandas' rolling windows); `StreamingLikelihood` gives the
same scores one record at a time, keeping only the last `long_window` averages (a sorted list for the quantile)
and a monotonic queue for the suppression maximum (`StreamingSuppression`): its cost per record is bounded by the window lengths and
does not grow with the stream. The two agree to float rounding (tests/test_streaming.py).
"""

from __future__ import annotations

import bisect
import inspect
import math
from collections import deque
from typing import Any

import numpy as np

from harness.detectors.rolling_quantile import chunk_quantiles, top_ranks

_LOG10 = math.log(10.0)
TAILS = ("gauss", "quantile")
FIRE_MARGIN = 1e-9  # a record must exceed the recent maximum by this much (relative) to escape damping
SMALL_CHUNK = 8  # chunks up to this long go record by record: cheaper than building pandas windows for them
MAX_TOP_RANKS = 64  # a quantile reading at most this many of a window's largest values skips pandas in chunks


def log10_gauss_tail(z: np.ndarray) -> np.ndarray:
    """log10 Q(z) for the standard normal upper tail Q, accurate in the far tail (no underflow to -inf)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    near = z < 30.0
    if near.any():
        erfc = np.vectorize(math.erfc, otypes=[np.float64])
        out[near] = np.log10(0.5 * erfc(z[near] / math.sqrt(2.0)))
    far = ~near
    if far.any():
        zf = z[far]
        series = np.log1p(-1.0 / (zf * zf) + 3.0 / zf**4)
        out[far] = (-0.5 * zf * zf - np.log(zf * math.sqrt(2.0 * math.pi)) + series) / _LOG10
    return out


def surprise(
    errors: np.ndarray,
    *,
    short_window: int = 1,
    long_window: int = 8640,
    min_history: int = 100,
    tail: str = "gauss",
    quantile: float = 0.99,
    rel_floor: float = 0.1,
    abs_floor: float = 1e-3,
) -> np.ndarray:
    """x_i of the module docstring (>= 0; 0 where the history is too short or the error is NaN)."""
    _check_tail(tail)
    import pandas as pd  # here, not at import: a scenario naming a learned detector validates without pandas

    e = pd.Series(np.asarray(errors, dtype=np.float64))
    m = e.rolling(short_window, min_periods=1).mean()
    hist = m.shift(1).rolling(long_window, min_periods=min_history)
    mv = m.to_numpy()
    x = np.zeros(len(mv))
    if tail == "gauss":
        mu = hist.mean().to_numpy()
        sd = hist.std(ddof=0).to_numpy()
        ok = np.isfinite(mv) & np.isfinite(mu) & np.isfinite(sd)
        x[ok] = _gauss_x(mv[ok], mu[ok], sd[ok], rel_floor, abs_floor)
    else:
        qv = hist.quantile(quantile).to_numpy()
        ok = np.isfinite(mv) & np.isfinite(qv)
        x[ok] = _quantile_x(mv[ok], qv[ok], abs_floor)
    return np.maximum(x, 0.0)


def _check_tail(tail: str) -> None:
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")


def _gauss_x(m: np.ndarray, mu: np.ndarray, sd: np.ndarray, rel_floor: float, abs_floor: float) -> np.ndarray:
    """x for tail="gauss", from the current averages and their histories' means and deviations."""
    sd = np.maximum(np.maximum(sd, rel_floor * np.abs(mu)), abs_floor)
    return -log10_gauss_tail((m - mu) / sd) / 10.0


def _quantile_x(m: np.ndarray, q: np.ndarray, abs_floor: float) -> np.ndarray:
    """x for tail="quantile": the current averages in units of their histories' quantile."""
    return np.maximum(m, 0.0) / np.maximum(q, abs_floor)


def suppress_repeats(r: np.ndarray, window: int, damping: float) -> np.ndarray:
    """Damp every score that does not exceed all of the previous `window` scores."""
    if window <= 0:
        return r
    import pandas as pd

    prev = pd.Series(r).shift(1).rolling(window, min_periods=1).max().fillna(-np.inf).to_numpy()
    return np.where(r > prev * (1.0 + FIRE_MARGIN), r, damping * r)


def anomaly_likelihood(
    errors: np.ndarray, start: int = 0, *, suppress: int = 300, damping: float = 0.5, **surprise_params: Any
) -> np.ndarray:
    """Scores in [0, 1) for one file's raw errors (see the module docstring for the formula); `surprise_params`
    are `surprise`'s (short_window, long_window, min_history, tail, quantile, rel_floor, abs_floor)."""
    x = surprise(errors, **surprise_params)
    x[: max(start, 0)] = 0.0
    r = x / (1.0 + x)
    r = suppress_repeats(r, suppress, damping)
    r[: max(start, 0)] = 0.0
    return r


_SURPRISE_DEFAULTS = {
    name: param.default
    for name, param in inspect.signature(surprise).parameters.items()
    if param.kind is inspect.Parameter.KEYWORD_ONLY
}


def window_max(a: np.ndarray, width: int) -> np.ndarray:
    """max(a[i : i + width]) for i in 0 .. len(a) - width, in O(len(a)) (van Herk / Gil-Werman): each value is
    the larger of a suffix maximum of one block of `width` and a prefix maximum of the next. No NaN in `a`."""
    n = len(a)
    blocks = -(-n // width)
    b = np.concatenate([a, np.full(blocks * width - n, -np.inf)]).reshape(blocks, width)
    prefix = np.maximum.accumulate(b, axis=1).ravel()[:n]
    suffix = np.maximum.accumulate(b[:, ::-1], axis=1)[:, ::-1].ravel()[:n]
    return np.maximum(suffix[: n - width + 1], prefix[width - 1 :])


class StreamingSuppression:
    """`suppress_repeats` one record (`update`) or one chunk (`update_many`) at a time, keeping a monotonic queue
    of (row, score) for the maximum of the last `window` scores: bounded state, equal results."""

    def __init__(self, window: int, damping: float):
        self.window, self.damping, self.i = window, damping, 0
        self._peaks: deque[tuple[int, float]] = deque()  # (row, r) with r decreasing

    def update(self, r: float) -> float:
        score = r
        if self.window > 0:
            while self._peaks and self._peaks[0][0] < self.i - self.window:
                self._peaks.popleft()
            if self._peaks and not r > self._peaks[0][1] * (1.0 + FIRE_MARGIN):
                score = self.damping * r
            while self._peaks and self._peaks[-1][1] <= r:
                self._peaks.pop()
            self._peaks.append((self.i, r))
        self.i += 1
        return score

    def update_many(self, r: np.ndarray) -> np.ndarray:
        """The chunk's scores, with the queue placed at its rows before the chunk (what it dropped can never be a
        window's maximum), and the queue rebuilt from the end of that sequence."""
        import pandas as pd

        r = np.asarray(r, dtype=np.float64)
        if 0 < len(r) <= SMALL_CHUNK:
            return np.array([self.update(float(x)) for x in r])
        k, i0 = len(r), self.i
        self.i += k
        if self.window <= 0 or k == 0:
            return r
        K = self.window
        placed = np.full(K + k, -np.inf)  # rows i0 - K .. i0 + k - 1
        for row, value in self._peaks:
            if row >= i0 - K:
                placed[row - (i0 - K)] = value
        placed[K:] = r
        if np.isnan(r).any():  # pandas' max skips a NaN; the block maximum would spread it
            prev = pd.Series(placed).shift(1).rolling(K, min_periods=1).max().to_numpy()[K:]
        else:
            prev = window_max(placed[:-1], K)  # every window's maximum, 3-5x faster than pandas' rolling max
        score = np.where(r > prev * (1.0 + FIRE_MARGIN), r, self.damping * r)
        later = np.concatenate([np.maximum.accumulate(placed[::-1])[::-1][1:], [-np.inf]])
        keep = np.flatnonzero((placed > later) & (np.arange(K + k) >= k))  # rows >= i0 + k - K, strictly decreasing
        self._peaks = deque(zip((keep + i0 - K).tolist(), placed[keep].tolist()))
        return score


class StreamingLikelihood:
    """`anomaly_likelihood` one record at a time: `update(error)` returns the score of the newest record.

    Same parameters, same formula (module docstring). A NaN error (a record without one yet) scores 0 and adds
    a missing value to the windows, as it does in the vectorised path.
    """

    def __init__(self, start: int = 0, *, suppress: int = 300, damping: float = 0.5, **surprise_params: Any):
        """`surprise_params` are `surprise`'s keyword arguments, with its defaults."""
        unknown = set(surprise_params) - set(_SURPRISE_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown likelihood parameters: {sorted(unknown)}")
        p = {**_SURPRISE_DEFAULTS, **surprise_params}
        _check_tail(p["tail"])
        self.start = max(start, 0)
        self.min_history, self.tail = p["min_history"], p["tail"]
        self.quantile, self.rel_floor, self.abs_floor = p["quantile"], p["rel_floor"], p["abs_floor"]
        self.i = 0
        self._short: deque[float] = deque(maxlen=p["short_window"])  # the last errors (NaN kept: a missing value)
        self._history: deque[float] = deque(maxlen=p["long_window"])  # the last averages m, NaN kept
        self._sorted: list[float] = []  # the finite values of _history, ascending
        # what update_many leaves: the history as an array, the deque and sorted list stale until a record comes
        # one at a time (a service's chunks never pay the O(long_window) rebuild; its records at most once)
        self._tail: np.ndarray | None = None
        # a high quantile's chunks read only the windows' top values (harness.detectors.rolling_quantile)
        ranks = top_ranks(p["long_window"], self.quantile) if self.tail == "quantile" else None
        self._ranks = ranks if ranks is not None and ranks <= MAX_TOP_RANKS else None
        self._suppressor = StreamingSuppression(suppress, damping)

    def update(self, error: float) -> float:
        if self._tail is not None:
            tail, self._tail = self._tail, None
            self._history = deque(tail.tolist(), maxlen=self._history.maxlen)
            self._sorted = np.sort(tail[np.isfinite(tail)]).tolist()
        self._short.append(float(error))
        finite = [e for e in self._short if not math.isnan(e)]
        m = math.fsum(finite) / len(finite) if finite else math.nan
        x = self._surprise(m) if self.i >= self.start else 0.0
        self._remember(m)
        score = self._suppressor.update(x / (1.0 + x))
        self.i += 1
        return score if self.i > self.start else 0.0

    def update_many(self, errors: np.ndarray) -> np.ndarray:
        """`update` of each error in turn, vectorised over the chunk (what a service scoring many events of one
        stream at once calls). The windows become pandas rolling windows over the state's tail followed by the
        chunk (the suppression maximum's monotonic queue placed at its rows: what it drops can never be a window's
        maximum), and the state is rebuilt from the end of that sequence. It agrees with `update` one by one to
        float rounding (tests/test_streaming.py)."""
        import pandas as pd

        e = np.asarray(errors, dtype=np.float64)
        if 0 < len(e) <= SMALL_CHUNK:
            return np.array([self.update(float(v)) for v in e])
        k, i0 = len(e), self.i
        if k == 0:
            return np.zeros(0)
        s, L = self._short.maxlen, self._history.maxlen
        short = np.concatenate([np.asarray(self._short, dtype=np.float64), e])
        m = e.copy() if s == 1 else pd.Series(short).rolling(s, min_periods=1).mean().to_numpy()[len(self._short):]
        known = self._tail if self._tail is not None else np.asarray(self._history, dtype=np.float64)
        hist = np.concatenate([known, m])
        x = np.zeros(k)
        if self.tail == "quantile":
            q = None if self._ranks is None else chunk_quantiles(hist, len(known), L, self.quantile, self.min_history, self._ranks)
            if q is None:
                window = pd.Series(hist).shift(1).rolling(L, min_periods=self.min_history)
                q = window.quantile(self.quantile).to_numpy()[len(known):]
            ok = np.isfinite(m) & np.isfinite(q)
            x[ok] = _quantile_x(m[ok], q[ok], self.abs_floor)
        else:
            window = pd.Series(hist).shift(1).rolling(L, min_periods=self.min_history)
            mu, sd = window.mean().to_numpy()[len(known):], window.std(ddof=0).to_numpy()[len(known):]
            ok = np.isfinite(m) & np.isfinite(mu) & np.isfinite(sd)
            x[ok] = _gauss_x(m[ok], mu[ok], sd[ok], self.rel_floor, self.abs_floor)
        x = np.maximum(x, 0.0)
        x[: max(self.start - i0, 0)] = 0.0
        score = self._suppressor.update_many(x / (1.0 + x))
        self._short.extend(e[-s:].tolist())
        self._tail = hist[-L:].copy()
        self.i = i0 + k
        return score

    def _surprise(self, m: float) -> float:
        n = len(self._sorted)
        if math.isnan(m) or n < self.min_history:
            return 0.0
        if self.tail == "quantile":
            return max(float(_quantile_x(m, self._quantile(), self.abs_floor)), 0.0)
        h = np.asarray(self._sorted)
        x = _gauss_x(np.array([m]), np.array([h.mean()]), np.array([h.std()]), self.rel_floor, self.abs_floor)
        return max(float(x[0]), 0.0)

    def _quantile(self) -> float:
        """Linear interpolation between the two nearest ranks, as pandas' rolling quantile computes it."""
        v, n = self._sorted, len(self._sorted)
        pos = self.quantile * (n - 1)
        lo = int(pos)
        if lo == pos or lo + 1 >= n:
            return v[lo]
        return v[lo] + (v[lo + 1] - v[lo]) * (pos - lo)

    def _remember(self, m: float) -> None:
        if len(self._history) == self._history.maxlen:
            old = self._history[0]
            if not math.isnan(old):
                del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._history.append(m)
        if not math.isnan(m):
            bisect.insort(self._sorted, m)
