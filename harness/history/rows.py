"""A run folder's figures as (cell, metric) rows, with the direction that is better and the noise each carries:
read from the same column descriptors the tables render from (harness.results.columns). The folder itself is
read by harness.results.folder (`RunFolder.read_run`)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from harness.results.columns import (
    B1_NOISE,
    BY_NAME,
    COLUMNS,
    DETERMINISTIC,
    LOAD_BY_NAME,
    TIMING_NOISE,
    Column,
)
from harness.results.schema import CellResult

NOISE_FIGURES = {c.noise for c in COLUMNS}  # columns that are other columns' noise: context, not figures to judge


@dataclass(frozen=True)
class Measurement:
    """One number of one cell of a run (a table or serving-table figure), with what judging it needs."""

    cell: str
    target: str | None
    metric: str  # a table column, or `column[path run]` for a serving row
    value: float
    better: str | None  # "higher", "lower"
    deterministic: bool  # identical inputs must give this exact value
    noise_pct: float | None  # the run's own measured spread of this figure, in percent
    unit: str
    duration_s: float | None = None  # how long the measurement behind it lasted: too brief, and it cannot be judged
    samples: tuple[float, ...] | None = None  # the figure per timing round or second of load: what a statistical test compares

    @property
    def judged(self) -> bool:
        """False for a column that is another column's noise (throughput_spread_pct): stored, shown, not judged."""
        return self.metric.partition("[")[0] not in NOISE_FIGURES


def figures(results: list[CellResult]) -> list[Measurement]:
    """Every numeric figure of the run's table and serving table, for its ok cells: with a better direction or
    not (a setting such as the batch, the NAB threshold), and the columns that are other columns' noise."""
    from harness.report import tables

    out: list[Measurement] = []
    ok = [r for r in results if r.status.value == "ok"]
    if not ok:
        return out
    target = {r.cell.id: r.cell.target for r in ok}
    by_id = {r.cell.id: r for r in ok}
    table = tables.build_table(ok)
    for _, row in table.iterrows():
        for name, value in row.items():
            col = BY_NAME.get(str(name))
            if col is None or not _number(value):
                continue
            spread = row.get(TIMING_NOISE) if col.noise == TIMING_NOISE else _b1_spread(by_id[row["cell"]]) if col.noise == B1_NOISE else None
            deterministic = col.noise == DETERMINISTIC or col.exact  # exact: the NAB threshold, found by deterministic code
            duration, samples = _measured(by_id[row["cell"]], col, float(value))
            out.append(Measurement(row["cell"], target[row["cell"]], col.name, float(value), col.better, deterministic,
                                   float(spread) if _number(spread) else None, col.unit, duration, samples))
    serving = tables.build_serving_table(ok)
    if serving is not None:
        rows = tables.load_rows(ok)
        for (_, row), load_row in zip(serving.iterrows(), rows):
            spread = _load_spread(load_row.summary)
            for name, value in row.items():
                col: Column | None = LOAD_BY_NAME.get(str(name))
                if col is None or not _number(value):
                    continue
                det = col.noise == DETERMINISTIC
                out.append(Measurement(row["cell"], target[row["cell"]], f"{col.name}[{row['path']} {row['run']}]", float(value),
                                       col.better, det, None if det else spread, col.unit,
                                       None if det or load_row.summary is None else load_row.summary.duration_s,
                                       None if det else _per_second(load_row.summary, col.better)))
    return out


def _measured(result: CellResult, col: Column, value: float) -> tuple[float | None, tuple[float, ...] | None]:
    """How long a measured table figure was measured, and the samples a test of it compares. A timing figure (batch
    1 or the large batch, percentiles, rates and speedups alike) has its timing's duration and its rounds'
    medians: did the rounds themselves move? A wall time (`seconds`, `scoring_eps`) is one sample of its own
    length; an SLA figure has the cell's shortest load run and its seconds."""
    if col.noise in (TIMING_NOISE, B1_NOISE) and result.timing is not None:
        lat = result.timing.batchN if col.noise == TIMING_NOISE else result.timing.batch1
        return lat.duration_s, _oriented(col.better, lat.rounds_p50_ms)
    if col.name == "seconds":
        return value, (value,)
    if col.name == "scoring_eps" and result.score is not None:
        return result.score.detect_s, (value,)
    if col.sla and col.noise != DETERMINISTIC and result.load is not None:  # judged on the cell's shortest load run
        runs = [p.summary for p in result.load.points]
        if runs:
            shortest = min(runs, key=lambda r: len(_per_second(r, col.better)))
            return shortest.duration_s, _per_second(shortest, col.better)
    return None, None


def _per_second(summary, better: str | None) -> tuple[float, ...]:
    """A load run's independent samples, one per measured second that scored anything: its goodput for a figure
    better higher, its p95 for one better lower."""
    if summary is None:
        return ()
    if better == "higher":
        return tuple(float(s.eps) for s in summary.per_second if s.rps)
    return tuple(s.p95_ms for s in summary.per_second if s.rps and s.p95_ms is not None)


def _oriented(better: str | None, rounds_ms: list[float]) -> tuple[float, ...] | None:
    """Per-round latencies as samples that move the way the figure does: as they are for a figure better lower,
    inverted (a rate) for one better higher."""
    rounds = [r for r in rounds_ms if r > 0]
    if not rounds:
        return None
    return tuple(rounds) if better != "higher" else tuple(1.0 / r for r in rounds)


def _b1_spread(result: CellResult) -> float | None:
    """The batch-1 timing rounds' spread, which the table leaves out (it is in the cell's result.json)."""
    return result.timing.batch1.spread_pct if result.timing is not None else None


def _load_spread(summary) -> float | None:
    """The run's own noise on a rate: the 95% half-width of the mean of its per-second rates, in percent."""
    if summary is None:
        return None
    eps = [s.eps for s in summary.per_second if s.rps]
    if len(eps) < 3:
        return None
    mean = sum(eps) / len(eps)
    sd = math.sqrt(sum((e - mean) ** 2 for e in eps) / (len(eps) - 1))
    return 100.0 * 1.96 * sd / math.sqrt(len(eps)) / mean if mean else None


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
