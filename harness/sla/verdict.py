"""Deployment SLAs as data: the objectives a scenario's `sla:` section promises (per target where it has targets),
what each cell measured against them, and the verdict (docs/architecture.md#deployment-slas).

An objective is judged from figures the run already records, never from a run of its own:
- `p95_ms`, `max_error_rate`: the worst fixed-rate load run on the client's path (`http` where the load has it,
  else `handle`), leaving out the run that carried the replica kill (that run is what `max_recovery_s` judges);
- `min_events_per_s`: the highest goodput of any of those runs or the peak search's run that kept both objectives
  above (the throughput the service holds while keeping its promise);
- `max_recovery_s`: the replica kill's recovery (`load.kill_replica_at_s`: seconds from the kill to the end of the
  last second with errors, shed requests or a p95 over `load.slo_p95_ms`);
- `min_nab_standard_cv`: NAB standard with thresholds chosen on other categories (`nab_standard_cv`);
- `max_quantized_loss_pct`: the NAB standard a build loses against its model's fp32 reference: the unpruned torch
  fp32 row, or, when the scenario has none, the unpruned fp32 row of the build's own runtime; it applies to every
  row with a backend but that reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from harness.sla.spec import Objectives

if TYPE_CHECKING:
    import pandas as pd

    from harness.results.schema import CellResult

PASS = "PASS"


# --- measuring -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    value: float | None  # None: not measured (see `why`)
    why: str = ""
    at_least: bool = False  # the value is a lower bound (a recovery still going when the run ended): it cannot pass a max


@dataclass(frozen=True)
class Objective:
    name: str
    column: str  # the table column holding what was measured
    unit: str
    limit: Literal["max", "min"]
    measure: Callable[["CellResult", Objectives, "Build"], Measured | None]  # None: does not apply to this cell


def _client_runs(r: "CellResult") -> tuple[list[Any], str]:
    """The fixed-rate runs on the client's path (http, else handle) without the one that carried the replica kill,
    and why there are none."""
    load = r.load
    if load is None:
        return [], "no load run (the scenario has no load: section)" if "load" not in r.kinds else "the load task did not finish"
    path = "http" if any(p.path == "http" for p in load.points) else "handle"
    runs = [p.summary for p in load.points if p.path == path]
    if load.fault is not None and load.points and load.points[0].path == path:
        runs = runs[1:]
    return runs, "" if runs else "no fixed-rate load run besides the one with the replica kill"


def _p95(r: "CellResult", o: Objectives, build: "Build") -> Measured:
    runs, why = _client_runs(r)
    values = [s.latency_ms.p95 for s in runs if s.latency_ms.p95 is not None]
    return Measured(max(values)) if values else Measured(None, why or "no request was scored")


def _error_rate(r: "CellResult", o: Objectives, build: "Build") -> Measured:
    runs, why = _client_runs(r)
    return Measured(max(s.error_rate for s in runs)) if runs else Measured(None, why)


def _events_per_s(r: "CellResult", o: Objectives, build: "Build") -> Measured:
    runs, why = _client_runs(r)
    if r.load is not None:
        path = "http" if any(p.path == "http" for p in r.load.points) else "handle"
        runs = runs + [p.summary for p in r.load.peaks if p.path == path and p.summary is not None]
    if not runs:
        return Measured(None, why)
    kept = [s.achieved_eps for s in runs
            if (o.p95_ms is None or (s.latency_ms.p95 is not None and s.latency_ms.p95 <= o.p95_ms))
            and (o.max_error_rate is None or s.error_rate <= o.max_error_rate)]
    return Measured(max(kept, default=0.0))


def _recovery(r: "CellResult", o: Objectives, build: "Build") -> Measured:
    if r.load is None:
        return Measured(None, _client_runs(r)[1])
    fault = r.load.fault
    if fault is None:
        return Measured(None, "no replica kill (set load.kill_replica_at_s)")
    if not fault.killed:
        return Measured(None, "the replica kill did not happen")
    return Measured(fault.recovery_s, at_least=fault.recovered is False)


def _nab_cv(r: "CellResult", o: Objectives, build: "Build") -> Measured:
    from harness.scoring.profiles import REFERENCE_PROFILE

    if r.score is None:
        return Measured(None, "the scoring task did not finish")
    cv = (r.score.cross_validated or {}).get(REFERENCE_PROFILE)
    return Measured(cv) if cv is not None else Measured(None, "no cross-validated score (one category only)")


def _quantized_loss(r: "CellResult", o: Objectives, build: "Build") -> Measured | None:
    if r.cell.backend is None or build.reference:
        return None  # no build, or the reference itself
    if build.loss_pct is None:
        return Measured(None, "no fp32 row of this model (torch, or its own runtime) to compare with")
    return Measured(build.loss_pct + 0.0)


@dataclass(frozen=True)
class Build:
    """Where a row stands among its model's builds: its NAB loss against the fp32 reference, or the reference."""

    loss_pct: float | None = None
    reference: bool = False


def builds(df: "pd.DataFrame") -> list[Build]:
    """Per table row: the reference is the model's (detector, parameters, target) unpruned torch fp32 row that
    finished, else its unpruned fp32 row on the row's own runtime."""
    if "backend" not in df:
        return [Build() for _ in range(len(df))]
    model = df["detector"].astype(str) + "\0" + df["params"].astype(str) + "\0" + (df["target"].astype(str) if "target" in df else "")
    fp32 = (df["precision"] == "fp32") & (df["pruning"] == "") & (df["status"] == "ok")
    out = []
    for i in range(len(df)):
        same = fp32 & (model == model.iloc[i])
        refs = df[same & (df["backend"] == "torch")]
        refs = refs if len(refs) else df[same & (df["backend"] == df["backend"].iloc[i])]
        if _missing(df["backend"].iloc[i]) or not len(refs):
            out.append(Build())
            continue
        ref = refs.index[0]
        base, mine = float(df.at[ref, "nab_standard"]), float(df["nab_standard"].iloc[i])
        loss = None if base == 0 or _missing(mine) else -100.0 * (mine - base) / abs(base)
        out.append(Build(loss, reference=ref == df.index[i]))
    return out


OBJECTIVES: tuple[Objective, ...] = (
    Objective("p95_ms", "sla_p95_ms", "ms", "max", _p95),
    Objective("min_events_per_s", "sla_events_per_s", "events/s", "min", _events_per_s),
    Objective("max_error_rate", "sla_error_rate", "", "max", _error_rate),
    Objective("max_recovery_s", "sla_recovery_s", "s", "max", _recovery),
    Objective("min_nab_standard_cv", "sla_nab_standard_cv", "points", "min", _nab_cv),
    Objective("max_quantized_loss_pct", "sla_quantized_loss_pct", "%", "max", _quantized_loss),
)


@dataclass(frozen=True)
class Judged:
    """One cell against its objectives: the verdict line, each objective's figure and whether it held."""

    verdict: str  # PASS, FAIL: ..., NOT MEASURED: ...
    figures: dict[str, float | None]  # column -> measured value
    held: dict[str, bool | None]  # objective -> True / False / None (not measured); objectives that do not apply are absent


def judge(r: "CellResult", objectives: Objectives, build: Build | None = None) -> Judged:
    """The verdict of one cell: FAIL (every objective missed, measured vs target) before NOT MEASURED (why)
    before PASS."""
    limits = objectives.given()
    fails, unmeasured, figures, held = [], [], {}, {}
    for o in OBJECTIVES:
        if o.name not in limits:
            continue
        if r.status.value != "ok":
            held[o.name] = None
            unmeasured.append(f"{o.name} (the cell {r.status.value})")
            continue
        m = o.measure(r, objectives, build or Build())
        if m is None:
            continue
        figures[o.column] = m.value
        if m.value is None:
            held[o.name] = None
            unmeasured.append(f"{o.name} ({m.why})")
            continue
        target = limits[o.name]
        ok = (m.value <= target and not m.at_least) if o.limit == "max" else m.value >= target
        held[o.name] = ok
        if m.at_least:
            fails.append(f"{o.name} >= {_fmt(m.value)}{o.unit and ' ' + o.unit} (still failing when the run ended; target {_fmt(target)})")
        elif not ok:
            fails.append(f"{o.name} {_fmt(m.value)}{o.unit and ' ' + o.unit} {'>' if o.limit == 'max' else '<'} {_fmt(target)}")
    if fails:
        verdict = "FAIL: " + "; ".join(fails)
    elif unmeasured:
        verdict = "NOT MEASURED: " + "; ".join(dict.fromkeys(unmeasured))
    else:
        verdict = PASS if held else ""
    return Judged(verdict, figures, held)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def add_columns(df: "pd.DataFrame", results: list["CellResult"]) -> None:
    """The `sla` verdict, `sla_met` (1 PASS, 0 FAIL, empty otherwise: what the history judges) and each
    objective's measured column, for the cells whose scenario has objectives for them (`Cell.sla`)."""
    if not any(r.cell.sla for r in results):
        return
    rows: list[dict[str, Any]] = []
    for r, build in zip(results, builds(df)):
        if r.cell.sla is None:
            rows.append({})
            continue
        j = judge(r, r.cell.sla, build)
        met = 1.0 if j.verdict == PASS else 0.0 if j.verdict.startswith("FAIL") else math.nan
        rows.append({"sla": j.verdict, "sla_met": met, **j.figures})
    for name in ["sla", "sla_met", *(o.column for o in OBJECTIVES)]:
        df[name] = [row.get(name, "" if name == "sla" else math.nan) for row in rows]


def verdicts(results: list["CellResult"], df: "pd.DataFrame") -> dict[str, dict[str, bool | None]]:
    """cell id -> objective -> held, for the run's exporter (`harness_sla_ok`)."""
    return {r.cell.id: judge(r, r.cell.sla, build).held for r, build in zip(results, builds(df)) if r.cell.sla is not None}


def failed(df: "pd.DataFrame") -> list[str]:
    """The cells whose verdict is FAIL (what `--fail-on-sla` exits 1 on)."""
    if "sla" not in df:
        return []
    return [str(c) for c, v in zip(df["cell"], df["sla"]) if str(v).startswith("FAIL")]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
