"""The terminal summary `harness run` prints: the key columns of table.csv and serving.csv in a 120-column
terminal, numbers rounded to what their noise supports, then where the full tables and the report are.

table.md has every column with every digit (thresholds need them); a terminal needs a glance: which cells are ok,
how they score, how fast they run and are served, and the verdicts. How many digits a figure keeps comes from its
column descriptor's noise (harness.results.columns): a deterministic NAB score keeps two decimals, a throughput
with a 10% timing spread two significant figures, a load figure (its noise is a per-second series, not a number)
two significant figures.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.results.columns import BY_NAME, DETERMINISTIC

if TYPE_CHECKING:
    import pandas as pd

WIDTH = 120
CELL_MAX = 44  # a longer cell id is shortened (`_short_ids`)
CELL_MIN = 16  # ...and never below this, even when the columns need the room
ABBREVIATIONS = (  # applied in order to a cell id too long for its column; each keeps the id readable
    ("onnxruntime", "ort"), ("openvino", "ov"), ("-dynamic", "-dyn"), ("-static", "-st"), ("prune-structured", "prune-s"),
    ("prune-magnitude", "prune-m"), ("sparsity-", "sp"), ("windowedGaussian", "wGauss"), ("autoencoder", "ae"),
)
LOAD_SIGNIFICANT = 2  # load figures' noise is a per-second series: two significant figures
TIMING_MAX_SIGNIFICANT = 4


@dataclass(frozen=True)
class Shown:
    """A summary column: its header, how a row's text is made, right-aligned (numbers) or not."""

    header: str
    text: Callable[["pd.Series"], str]
    right: bool = True


def summary(table: "pd.DataFrame", serving: "pd.DataFrame | None" = None, paths: list[tuple[str, Path]] | None = None,
            width: int = WIDTH) -> str:
    """The summary text: the table of key columns (columns dropped, least useful first, and cell ids shortened
    until every line fits `width`), the errors of failed cells, a legend, then `paths` as `label: path`."""
    table = _with_serving(table, serving)
    shown = _columns(table)
    ids = [str(c) for c in table["cell"]]
    cells = _short_ids(ids, CELL_MAX)
    optional = ["gate vs rt", "NAB cv", "peak ev/s", "F1"]  # dropped in this order while a line is too wide
    lines = _grid(table, shown, cells)
    while _excess(lines, width) > 0 and (drop := next((h for h in optional if any(s.header == h for s in shown)), None)):
        shown = [s for s in shown if s.header != drop]
        lines = _grid(table, shown, cells)
    if _excess(lines, width) > 0:
        cells = _short_ids(ids, max(CELL_MIN, max(map(len, cells)) - _excess(lines, width)))
        lines = _grid(table, shown, cells)
    out = [ln[:width] for ln in lines]
    for _, row in table[table["status"] != "ok"].iterrows():
        out.append(_fit(f"{row['cell']} {row['status']}: {_text(row.get('error')) or 'see table.md'}", width))
    gates, sla = any(s.header.startswith("gate") for s in shown), any(s.header == "sla" for s in shown)
    if gates or sla:  # say only what the columns shown need
        legend = ["gate: INT8/bf16/fp16 vs torch fp32 (vs rt: vs its runtime's fp32)"] if gates else []
        legend += ["n/m: not measured", "reasons in table.md"]
        out.append(_fit("; ".join(legend), width))
    out += [f"{label}: {path}" for label, path in paths or []]
    return "\n".join(out) + "\n"


def for_folder(root: Path, width: int = WIDTH) -> str:
    """The summary of the run folder `root`: its table.csv and serving.csv, and the paths of table.md,
    serving.md and report.html where they exist."""
    import pandas as pd

    read = lambda name: pd.read_csv(root / name, keep_default_na=False, na_values=[""])  # noqa: E731
    serving = read("serving.csv") if (root / "serving.csv").is_file() else None
    paths = [(label, root / name) for label, name in (("table", "table.md"), ("serving", "serving.md"),
                                                       ("report", "report.html")) if (root / name).is_file()]
    return summary(read("table.csv"), serving, paths, width)


def _with_serving(table: "pd.DataFrame", serving: "pd.DataFrame | None") -> "pd.DataFrame":
    """The table with, per served cell, its worst fixed-rate p95 on the client's path and its peak (events/s)."""
    table = table.copy()
    table["_p95"], table["_peak"] = math.nan, math.nan
    if serving is None or not len(serving):
        return table
    for i, cell in table["cell"].items():
        runs = serving[serving["cell"] == cell]
        path = "http" if (runs["path"] == "http").any() else "handle"
        runs = runs[runs["path"] == path]
        fixed = runs[~runs["run"].astype(str).str.startswith("peak") & ~runs["run"].astype(str).str.contains("killed")]
        if len(fixed) and fixed["p95_ms"].notna().any():
            table.at[i, "_p95"] = float(fixed["p95_ms"].max())
        if "peak_eps_at_slo" in runs and runs["peak_eps_at_slo"].notna().any():
            table.at[i, "_peak"] = float(runs["peak_eps_at_slo"].max())
    return table


def _columns(table: "pd.DataFrame") -> list[Shown]:
    """The key columns this table has figures for."""
    has = lambda name: name in table and table[name].notna().any() and (table[name].astype(str) != "").any()  # noqa: E731
    shown = [Shown("status", lambda r: _text(r["status"]), right=False),
             Shown("NAB std", lambda r: _number(r, "nab_standard")), Shown("F1", lambda r: _number(r, "f1"))]
    if has("nab_standard_cv"):
        shown.append(Shown("NAB cv", lambda r: _number(r, "nab_standard_cv")))
    if has("throughput_eps"):
        shown.append(Shown("thr ev/s", lambda r: _number(r, "throughput_eps")))
    if has("_p95"):
        shown.append(Shown("p95 ms", lambda r: _rounded(r["_p95"], LOAD_SIGNIFICANT)))
    if has("_peak"):
        shown.append(Shown("peak ev/s", lambda r: _rounded(r["_peak"], LOAD_SIGNIFICANT)))
    for column, header in (("gate", "gate"), ("gate_vs_backend", "gate vs rt"), ("sla", "sla")):
        if has(column):
            shown.append(Shown(header, lambda r, c=column: _verdict(r.get(c)), right=False))
    return shown


def _excess(lines: list[str], width: int) -> int:
    return max(map(len, lines)) - width


def _grid(table: "pd.DataFrame", shown: list[Shown], cells: list[str]) -> list[str]:
    """Aligned rows under a header: two spaces between columns."""
    rows = [["cell", *(s.header for s in shown)]]
    rows += [[cell, *(s.text(row) for s in shown)] for cell, (_, row) in zip(cells, table.iterrows())]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = [False, *(s.right for s in shown)]
    return ["  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(row, widths, right)).rstrip() for row in rows]


def _short_ids(ids: list[str], limit: int) -> list[str]:
    """Each id within `limit` characters: known long words abbreviated, then its parts (between `.` and `@`) cut,
    each keeping its start (`edge-n~`): first the parts most ids share (they tell fewest rows apart), longest
    first; ids that would still coincide keep their row number."""
    abbreviated = [_abbreviate(cid, limit) for cid in ids]
    split = [re.split(r"([.@])", cid) for cid in abbreviated]  # parts at even indices, separators between
    shared = Counter(p for parts in split for p in set(parts[::2]))  # part -> ids holding it
    out = [_cut(parts, limit, shared) for parts in split]
    return [s if out.count(s) == 1 else f"{s[: max(limit - len(str(i)) - 1, 1)]}#{i}" for i, s in enumerate(out)]


def _abbreviate(cid: str, limit: int) -> str:
    for long, abbr in ABBREVIATIONS:
        if len(cid) <= limit:
            break
        cid = cid.replace(long, abbr)
    return cid


def _cut(parts: list[str], limit: int, shared: Counter) -> str:
    keep = [len(p) for p in parts]
    while sum(keep) > limit:
        i = max(range(0, len(parts), 2), key=lambda j: (keep[j] > 3, shared[parts[j]], keep[j]))
        if keep[i] <= 3:
            break
        keep[i] -= 1
    cut = "".join(p if k >= len(p) else p[: k - 1] + "~" for p, k in zip(parts, keep))
    return cut if len(cut) <= limit else cut[: limit - 1] + "~"


def _number(row: "pd.Series", name: str) -> str:
    """`row[name]` rounded by its column's noise: deterministic figures keep the decimals their unit is quoted
    with, timing figures the significant figures their row's spread leaves, anything else two."""
    value = row.get(name)
    if not _finite(value):
        return ""
    column = BY_NAME[name]
    if column.noise == DETERMINISTIC:
        return f"{float(value):.2f}" if column.unit == "points" else f"{float(value):.3f}"
    noise = BY_NAME.get(column.noise or "")
    spread = row.get(noise.name) if noise is not None else None
    return _rounded(float(value), _significant(float(spread)) if _finite(spread) else LOAD_SIGNIFICANT)


def _significant(spread_pct: float) -> int:
    """Significant figures a relative spread supports: 10% -> 2, 1% -> 3, 0.1% -> 4 (at most)."""
    if spread_pct <= 0:
        return TIMING_MAX_SIGNIFICANT
    return max(1, min(TIMING_MAX_SIGNIFICANT, math.floor(-math.log10(spread_pct / 100.0)) + 1))


def _rounded(value: float, significant: int) -> str:
    """`value` to `significant` figures, with thousands separators and no exponent."""
    if not _finite(value):
        return ""
    if value == 0:
        return "0"
    digits = significant - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, digits)
    return f"{rounded:,.{max(digits, 0)}f}"


def _verdict(value: Any) -> str:
    """A verdict's first word: PASS, FAIL, n/a, n/m (NOT MEASURED); empty when there is none."""
    text = _text(value)
    if text.startswith("NOT MEASURED"):
        return "n/m"
    return text.split(":")[0] if text else ""


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."
