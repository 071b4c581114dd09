"""A metric's trend over the runs in the history: a table and a PNG."""

from __future__ import annotations

from typing import Any


def plot(rows: list[dict[str, Any]], metric: str) -> bytes:
    """One line per cell: the metric's value at each run's start, with its noise as an error bar."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows)
    df["started_at"] = pd.to_datetime(df["started_at"], utc=True, errors="coerce")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for cell, g in df.groupby("cell"):
        err = (g["noise_pct"].fillna(0) / 100.0 * g["value"]).abs()
        ax.errorbar(g["started_at"], g["value"], yerr=err, marker="o", capsize=3, label=str(cell))
    ax.set_title(f"{metric} over runs")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
