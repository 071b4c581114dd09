"""A high rolling quantile for the newest part of a series only, as pandas' `rolling(L).quantile(q)` gives it.

Why: a live stream's chunk of k new values needs the quantile of the previous L values at each of them; pandas
must first insert the L values already known into its skiplist, every chunk (L = 4000 against k of a few hundred
to a few thousand: most of a served learned detector's time went there). For a high quantile only the top few
values of a window matter, and every window of the chunk contains the same "core" of older values, whose D-th
largest value is a floor for every window's D-th largest. So the few values at or above that floor (the core's
top, plus any of the leaving and new values that reach it) decide every window, and each window's ranks are read
from them with a (k x candidates) count. Same linear interpolation as pandas; None where it does not apply (a
quantile too low, windows longer than the history, too many ties at the floor), for the caller's pandas path.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

MAX_CELLS = 2_000_000  # k x candidates beyond this: the pandas path is cheaper


@lru_cache(maxsize=64)  # every stream a service starts asks, with its detector's one window and quantile
def top_ranks(window: int, quantile: float) -> int:
    """D: how many of a window's largest values a `quantile` of it can read, over every count 1..`window`."""
    n = np.arange(1, window + 1)
    lo = (quantile * (n - 1)).astype(np.int64)  # pandas truncates the fractional index the same way
    return int((n - 1 - lo).max()) + 1  # the value it interpolates towards ranks higher still


def chunk_quantiles(hist: np.ndarray, start: int, window: int, quantile: float, min_periods: int,
                    ranks: int) -> np.ndarray | None:
    """The quantile of hist[j - window : j] (non-finite values left out; NaN below `min_periods`) for each j in
    start .. len(hist) - 1, i.e. `pd.Series(hist).shift(1).rolling(window, min_periods).quantile(quantile)`
    from `start` on; `ranks` is top_ranks(window, quantile). None when this method does not apply. A chunk
    longer than a quarter of the window goes in pieces of that length, so each piece's windows share a core."""
    piece = max(1, window // 4)  # measured: 2.2 ms for 10,000 values of a 4000-window (//2: 2.5, //8: 2.5)
    out = []
    for a in range(start, len(hist), piece):
        b = min(a + piece, len(hist))
        lo = max(0, a - window)
        part = _piece(hist[lo:b], a - lo, window, quantile, min_periods, ranks)
        if part is None:
            return None
        out.append(part)
    return np.concatenate(out) if out else np.zeros(0)


def _piece(hist: np.ndarray, start: int, window: int, quantile: float, min_periods: int, ranks: int) -> np.ndarray | None:
    """chunk_quantiles for a chunk shorter than the window."""
    k = len(hist) - start
    finite = np.isfinite(hist)
    count = np.concatenate([[0], np.cumsum(finite)])
    t = np.arange(k)
    ends = start + t  # window t is hist[max(0, ends - window) : ends]
    n = count[ends] - count[np.maximum(ends - window, 0)]
    core = hist[max(0, start + k - 1 - window) : start]  # in every window of the chunk
    core = core[np.isfinite(core)]
    if len(core) < ranks:
        return None
    floor = np.partition(core, len(core) - ranks)[len(core) - ranks]  # the core's ranks-th largest
    first = max(0, start - window)  # the earliest value any window of the chunk holds
    span = hist[first : start + k - 1]
    pos = np.flatnonzero(finite[first : start + k - 1] & (span >= floor)) + first
    if len(pos) * k > MAX_CELLS:
        return None
    order = np.argsort(-hist[pos], kind="stable")
    pos, values = pos[order], hist[pos][order]  # candidates, largest first
    # value at hist position p is in window t when ends - window <= p < ends; (candidates x k), so that the
    # running counts go down the candidates a whole row (every window) at a time
    present = (pos[:, None] < ends[None, :]) & (pos[:, None] >= (ends - window)[None, :])
    small = len(pos) < 255 and ranks < 255  # counts and ranks fit a byte: a quarter of the memory traffic
    seen = np.cumsum(present.view(np.uint8) if small else present, axis=0, dtype=np.uint8 if small else np.int32)
    at = quantile * (n - 1)
    lo = at.astype(np.int64)
    out = np.full(k, np.nan)
    ok = (n >= max(min_periods, 1))
    if not ok.any():
        return out
    rank_lo = np.where(ok, n - 1 - lo, 0)  # descending rank of the ascending index lo

    def value_at(rank: np.ndarray) -> np.ndarray:
        # seen grows down the candidates (how many of window t's are at least this large): the first with
        # seen > rank comes after every one with seen <= rank
        return values[(seen <= rank.astype(seen.dtype)[None, :]).sum(axis=0)]

    v_lo = value_at(rank_lo)
    exact = (at == lo) | (lo + 1 >= n)
    v_hi = value_at(np.maximum(rank_lo - 1, 0))
    q = np.where(exact, v_lo, v_lo + (v_hi - v_lo) * (at - lo))
    out[ok] = q[ok]
    return out
