"""The run's plots, each a PNG or SVG (bytes) or None when the run has nothing to draw. The run folder keeps PNGs;
the HTML report (harness.report.html) embeds SVGs, which stay sharp when printed."""

from __future__ import annotations

import io
from typing import Any

from harness.results.schema import CellResult, Status


def _png(fig: Any, fmt: str = "png") -> bytes:
    """The figure's bytes in `fmt` ("png" or "svg"), the figure closed. SVG text is kept as text, not paths:
    smaller, and searchable in the report. Laid out by matplotlib's constrained layout (legends beside the axes
    included), which draws the figure once where `bbox_inches="tight"` draws it twice: a report of four runs
    draws about ten plots."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "harness"}):
        fig.savefig(buf, format=fmt, dpi=110, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return buf.getvalue()


def latency_plot(results: list[CellResult], fmt: str = "png") -> bytes | None:
    """p50 / p95 / p99 against achieved events/s, one line per variant and path, over every measured run (the
    rates asked for and the peak search's probes); None when nothing was load-tested."""
    lines = {}
    for r in results:
        if r.load is None:
            continue
        for path in sorted({p.path for p in r.load.points} | {p.path for p in r.load.peaks}):
            runs = [p.summary for p in r.load.points if p.path == path]
            runs += [s for peak in r.load.peaks if peak.path == path for s in peak.runs]
            runs = sorted((s for s in runs if s.requests), key=lambda s: s.achieved_eps)
            if runs:
                lines[f"{r.cell.id} ({path})"] = runs
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for k, (label, runs) in enumerate(lines.items()):
        colour = f"C{k % 10}"
        x = [s.achieved_eps for s in runs]
        for pct, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
            ax.plot(x, [getattr(s.latency_ms, pct) for s in runs], style, color=colour, marker="o", ms=3,
                    label=f"{label} {pct}")
    ax.set(xlabel="achieved events/s", ylabel="latency (ms, from intended send time)", yscale="log")
    ax.set_title("Latency against throughput (p50 dotted, p95 solid, p99 dashed)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot: the lines stay visible
    return _png(fig, fmt)


def crossover_points(results: list[CellResult]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{backend entry: {model: [(batch, speedup)]}}: every reduced-precision or pruned row's throughput against
    its model's unpruned fp32 row on the same runtime, at batch 1, the large batch and each `timing.sweep` size."""
    def key(r: CellResult) -> str:
        return r.cell.id.replace("." + r.cell.build, "")  # the model (and its target, if any)

    def speeds(r: CellResult) -> dict[int, float]:
        t = r.timing
        return {f.batch: f.events_per_s for f in (t.batch1, t.batchN, *t.sweep.values())} if t else {}

    timed = [r for r in results if r.cell.backend is not None and r.status == Status.OK and r.timing is not None]
    fp32 = {(key(r), r.cell.backend.backend): speeds(r) for r in timed if r.cell.backend.precision == "fp32" and r.cell.pruning is None}
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in timed:
        spec = r.cell.backend
        ref = fp32.get((key(r), spec.backend))
        if ref is None or (spec.precision == "fp32" and r.cell.pruning is None):
            continue
        mine = speeds(r)
        points = [(b, mine[b] / ref[b]) for b in sorted(mine) if b in ref and ref[b] > 0]
        if points:
            out.setdefault(r.cell.build, {})[key(r)] = points
    return out


def crossover_plot(results: list[CellResult], fmt: str = "png") -> bytes | None:
    """What a precision (or pruning) buys on its own runtime, against batch size, one line per model: where INT8
    starts to pay. Drawn when some timing swept batch sizes (`timing.sweep`); None otherwise."""
    if not any(r.timing is not None and r.timing.sweep for r in results):
        return None
    panels = crossover_points(results)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False, sharey=True)
    for ax, (token, lines) in zip(axes.flat, panels.items()):
        for label, points in lines.items():
            ax.plot(*zip(*points), marker="o", ms=3, label=label)
        ax.axhline(2.0, color="k", lw=0.8, ls="--")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="batch (windows per call)", title=token)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="x-small", loc="best")
    for ax in axes[:, 0]:
        ax.set_ylabel("throughput vs the same runtime's fp32")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("What the precision itself buys (dashed: 2x)")
    return _png(fig, fmt)


def pr_plot(curves: dict[str, dict[str, Any] | None], fmt: str = "png", max_points: int | None = None) -> bytes | None:
    """Every given cell's precision-recall curve in one PNG; None when there is none. `max_points`: draw each
    curve through at most this many of its points (a NAB curve has one per distinct score, ~10^5), evenly spaced
    in recall, which a plot a few hundred pixels wide cannot tell apart."""
    curves = {cid: c for cid, c in curves.items() if c is not None}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for cid, c in curves.items():
        recall, precision = _thin(c["recall"], c["precision"], max_points)
        ax.step(recall, precision, where="post", label=cid)
    ax.set(xlabel="recall (windows detected)", ylabel="precision (over alert events)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title("Precision-recall over all thresholds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return _png(fig, fmt)


def _thin(x: Any, y: Any, max_points: int | None) -> tuple[Any, Any]:
    """At most `max_points` of the (x, y) points, keeping the first and the last: each the first point at or past
    an even step of x's range, so a step curve keeps its shape."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if max_points is None or len(x) <= max_points:
        return x, y
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    marks = np.linspace(x[0], x[-1], max_points)
    keep = np.unique(np.concatenate([[0, len(x) - 1], np.clip(np.searchsorted(x, marks), 0, len(x) - 1)]))
    return x[keep], y[keep]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """The indices of the points no other point beats on both axes (both higher-is-better), by ascending x: the
    variants worth shipping, since each other one is slower and less accurate than one of these."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:  # fastest first: a point is on the front when it is more accurate than every faster one
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return front[::-1]


def accuracy_speed_plot(rows: list[dict[str, Any]], fmt: str = "svg") -> bytes | None:
    """NAB standard score against throughput, one point per ok variant (`rows`: dicts with cell, model, precision,
    throughput_eps, nab_standard), one colour per model, one marker per precision, with the Pareto front drawn
    through the variants no other beats on both; None with fewer than two points."""
    import math

    pts = [r for r in rows if all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for k in ("throughput_eps", "nab_standard"))
           and r["throughput_eps"] > 0]  # timed variants only
    if len(pts) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in pts))
    precisions = list(dict.fromkeys(str(r.get("precision") or "") for r in pts))
    markers = "osD^vP*Xh<>"
    fig, ax = plt.subplots(figsize=(8, 5))
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}  # one scatter per colour and marker: fewer artists to draw
    for r in pts:
        groups.setdefault((models.index(r["model"]), precisions.index(str(r.get("precision") or ""))), []).append(r)
    for (m, p), group in groups.items():
        ax.scatter([r["throughput_eps"] for r in group], [r["nab_standard"] for r in group], color=f"C{m % 10}",
                   marker=markers[p % len(markers)], s=36, zorder=3)
    front = [pts[i] for i in pareto_front([(r["throughput_eps"], r["nab_standard"]) for r in pts])]
    ax.step([r["throughput_eps"] for r in front], [r["nab_standard"] for r in front], where="post", color="k", lw=1,
            ls="--", zorder=2, label="Pareto front")
    ax.scatter([r["throughput_eps"] for r in front], [r["nab_standard"] for r in front], s=140, facecolors="none",
               edgecolors="k", zorder=4)
    for r in front:
        ax.annotate(r["cell"], (r["throughput_eps"], r["nab_standard"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    for k, m in enumerate(models):
        ax.scatter([], [], color=f"C{k % 10}", marker="o", label=m)
    for k, p in enumerate(precisions):
        ax.scatter([], [], color="grey", marker=markers[k % len(markers)], label=p or "(no precision)")
    ax.set(xscale="log", xlabel="throughput (events/s, large batch)", ylabel="NAB standard score")
    ax.set_title("Accuracy against speed (circled: the Pareto front)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small", loc="best")
    return _png(fig, fmt)


def history_plot(series: dict[str, list[tuple[Any, float, bool]]], metric: str, fmt: str = "svg") -> bytes | None:
    """A headline figure over the history's runs: `series` maps a cell to its (started_at, value, regressed)
    points, oldest first; a regression (worse than the run before by more than its noise) is a red cross."""
    if not any(len(points) >= 2 for points in series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for k, (cell, points) in enumerate(series.items()):
        when, value, bad = zip(*points)
        ax.plot(when, value, marker="o", ms=3, color=f"C{k % 10}", label=cell)
        worse = [(w, v) for w, v, b in points if b]
        if worse:
            ax.scatter(*zip(*worse), marker="x", s=80, color="red", zorder=4)
    ax.scatter([], [], marker="x", color="red", label="regressed")
    ax.set(ylabel=metric, title=f"{metric} over the history's runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="best")
    ax.tick_params(axis="x", labelrotation=30)
    return _png(fig, fmt)
