"""The run's plots, each a PNG (bytes) or None when the run has nothing to draw."""

from __future__ import annotations

import io
from typing import Any

from harness.results.schema import CellResult, Status


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def latency_plot(results: list[CellResult]) -> bytes | None:
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
    ax.legend(fontsize="x-small", loc="best")
    return _png(fig)


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


def crossover_plot(results: list[CellResult]) -> bytes | None:
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
    return _png(fig)


def pr_plot(curves: dict[str, dict[str, Any] | None]) -> bytes | None:
    """Every given cell's precision-recall curve in one PNG; None when there is none."""
    curves = {cid: c for cid, c in curves.items() if c is not None}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for cid, c in curves.items():
        ax.step(c["recall"], c["precision"], where="post", label=cid)
    ax.set(xlabel="recall (windows detected)", ylabel="precision (over alert events)", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title("Precision-recall over all thresholds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return _png(fig)
