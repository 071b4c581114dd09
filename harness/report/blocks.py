"""What the HTML report's sections hold (tables, figures, text) and how a value reads in a table cell: the
shapes harness.report.sections builds and harness.report.html renders."""

from __future__ import annotations

import base64
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.report.runs import LoadedRun

if TYPE_CHECKING:
    import pandas as pd

PR_MAX_CELLS = 8  # a PR plot with more lines than this cannot be read: the best cells by NAB standard are drawn
PR_MAX_POINTS = 600  # per curve (plots.pr_plot): the SVG stays small


# --- what a section holds ---------------------------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    sort: str = ""  # the raw value the table sorts by ("" for text: its text)
    css: str = ""  # "num", "pass", "fail", "na"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    docs: list[str] = field(default_factory=list)  # each column's description (a header's tooltip)
    caption: str = ""
    row_css: list[str] = field(default_factory=list)  # a class per row ("ours": the run's own rows), or none
    kind: str = "table"


@dataclass
class Figure:
    data: bytes
    alt: str
    caption: str = ""
    mime: str = "image/svg+xml"
    kind: str = "figure"

    @property
    def uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass
class Text:
    text: str
    heading: bool = False  # a run's sub-heading inside a section
    pre: bool = False  # preformatted (the scenario as given)
    kind: str = "text"


@dataclass
class Section:
    anchor: str
    title: str
    intro: str
    blocks: list[Table | Figure | Text]


# --- formatting -------------------------------------------------------------------------------------------------
def fmt(value: Any, column: str = "") -> Cell:
    """A table cell: numbers rounded to what a reader compares (3 significant digits below 10, 2 decimals below
    1,000, whole numbers with separators above and for counts), exact columns (the NAB threshold) in full,
    missing values empty; the raw value kept for sorting. PASS / FAIL / VALID / INVALID / n/a texts are marked."""
    from harness.results.columns import BY_NAME

    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) in ("<NA>", "NaT"):
        return Cell("", "", "num")
    if isinstance(value, bool):
        return Cell(str(value).lower(), str(int(value)))
    if isinstance(value, numbers.Number):
        v = float(value)
        col = BY_NAME.get(column)
        if col is not None and col.exact:
            text = repr(v)
        elif abs(v) < 1e-9:  # a float's rounding error (1.75e-14), not a figure
            text = "0"
        elif v.is_integer() or abs(v) >= 1000:
            text = f"{v:,.0f}"
        else:
            text = f"{v:.2f}" if abs(v) >= 10 else f"{v:.3g}"
        return Cell(text, repr(v), "num")
    text = str(value)
    head = text.split(":", 1)[0].strip().upper()
    css = {"PASS": "pass", "FAIL": "fail", "VALID": "pass", "INVALID": "fail", "N/A": "na", "FAILED": "fail",
           "NOT MEASURED": "na"}.get(head, "")
    return Cell(text, "", (css + " long").strip() if len(text) > 40 else css)


DOCS = {  # the columns a report derives, beside those harness.results.columns describes
    "f1_vs_fp32": "F1 minus the F1 of the model's torch fp32 build: what the reduced precision or pruning cost in F1",
    "source": "this run, NAB's raw outputs re-scored with the run's rules, or NAB's published scoreboard",
    "published_standard": "NAB's own published standard score for this detector (results/final_results.json)",
    "rank": "by nab_standard",
    "change_pct": "this run against the run before, in percent",
    "verdict": "as `harness compare` judges it: regressed, improved, noise, same, changed inputs",
}


def table(df: "pd.DataFrame | None", columns: list[str], caption: str = "") -> Table | None:
    """The DataFrame's `columns` that it has (and that are not empty throughout) as a report table, each header
    with its column's description (harness.results.columns); None when it has no rows."""
    from harness.results.columns import BY_NAME, LOAD_BY_NAME

    if df is None or df.empty:
        return None
    shown = [c for c in columns if c in df.columns and df[c].astype(str).replace({"nan": "", "None": ""}).str.len().gt(0).any()]
    docs = [DOCS.get(c) or getattr(BY_NAME.get(c) or LOAD_BY_NAME.get(c), "doc", "") for c in shown]
    rows = [[fmt(row[c], c) for c in shown] for _, row in df.iterrows()]
    return Table(shown, rows, docs, caption)


def figure(data: bytes | None, alt: str, caption: str = "") -> Figure | None:
    return None if data is None else Figure(data, alt, caption, "image/svg+xml" if data.lstrip().startswith(b"<") else "image/png")


def present(*blocks: Any) -> list[Any]:
    return [b for b in blocks if b is not None]


def per_run(runs: list[LoadedRun], make: Any) -> list[Any]:
    """Each run's blocks from `make(run)` (a list, empty when the run has nothing here), under the run's name
    when more than one run has some."""
    parts = [(run, blocks) for run in runs if (blocks := make(run))]
    if len(parts) == 1:
        return parts[0][1]
    return [b for run, blocks in parts for b in (Text(f"{run.name} (scenario {run.scenario})", heading=True), *blocks)]
