"""The HTML report: one self-contained file from one or more run folders (harness.report.runs), for stakeholders.

It opens with the three success criteria's verdicts (harness.report.verdicts), then the insights drawn from the
data (harness.report.insights), then one section per kind of evidence the runs hold; a section the runs have no
data for is left out (its criterion then says NOT MEASURED). Everything is inline: the plots are SVG in `<img>`
data URIs (sharp when printed, and isolated from each other's ids), the style and the few lines of script that
sort tables are in the page, so the file opens offline and can be mailed or uploaded as it is. Every text that
comes from a run is escaped (jinja2's autoescape).
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from harness.report.runs import LoadedRun


# --- the page ---------------------------------------------------------------------------------------------------
def render(runs: list[LoadedRun], title: str | None = None, history: Path | None = None) -> str:
    """The report's HTML for `runs`: verdicts, insights, then the sections the runs have data for."""
    import jinja2

    from harness.report import sections
    from harness.report.insights import insights
    from harness.report.verdicts import criteria

    shown = [s for s in sections.all_sections(runs, history) if s is not None and s.blocks]
    anchors = {s.anchor for s in shown}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["breakable"] = breakable
    template = env.from_string(resources.files("harness.report").joinpath("report.html.j2").read_text(encoding="utf-8"))
    return template.render(
        title=title or default_title(runs),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=[run_summary(r) for r in runs],
        criteria=criteria(runs),
        insights=insights(runs, history),
        sections=shown,
        anchors=anchors,
    )


def breakable(text: str) -> Any:
    """`text` escaped, with a line-break opportunity after each `_` and each `.` before a letter: column names and
    cell ids (`autoencoder.onnxruntime-int8-dynamic`) then wrap in a narrow column instead of widening the table
    past the page; numbers (`0.62x`) stay whole."""
    import re

    from markupsafe import Markup, escape

    return Markup(re.sub(r"(_|\.(?=[A-Za-z]))", r"\1<wbr>", str(escape(text))))


def default_title(runs: list[LoadedRun]) -> str:
    return "Benchmark report: " + ", ".join(dict.fromkeys(r.scenario for r in runs))


def run_summary(run: LoadedRun) -> dict[str, Any]:
    """The run list's row: what the run is, how it ended, and how much of it finished."""
    ok = sum(1 for r in run.results if r.status.value == "ok")
    return {"name": run.name, "scenario": run.scenario, "status": run.manifest.status.value,
            "started": run.manifest.started_at, "finished": run.manifest.finished_at or "",
            "cells": f"{ok}/{len(run.manifest.cells)} ok", "corpus": _corpus(run), "path": str(run.root)}


def _corpus(run: LoadedRun) -> str:
    c = run.manifest.corpus
    synthetic = (run.manifest.scenario.get("resolved", {}).get("corpus") or {}).get("synthetic")
    where = f"synthetic (seed {synthetic.get('seed')})" if synthetic else str(c.get("root", ""))
    only = f", only {', '.join(c['only'])}" if c.get("only") else ""
    return f"{where}: {c.get('files', '?')} files, {c.get('rows', 0):,} rows{only}"


def write_report(runs: list[LoadedRun], out: str | Path, title: str | None = None, history: Path | None = None) -> Path:
    """Render and write the report atomically (harness.atomic); an InputError naming `out` when it cannot be."""
    from harness.atomic import write_text
    from harness.errors import InputError

    out = Path(out)
    check_out(out)
    page = render(runs, title, history)
    try:
        write_text(out, page)
    except OSError as exc:
        raise InputError(f"cannot write the report ({exc.strerror or exc})", out) from None
    return out


def check_out(out: Path, suffix: str = ".html") -> None:
    """Refuse, before any work is done, an output that is a folder, has another suffix, or lies where nothing can
    be written (the nearest folder that exists is not writable): nothing is created to find out."""
    import os

    from harness.errors import InputError

    if out.is_dir():
        raise InputError(f"is a folder: expected a file name such as report{suffix}", out)
    if out.suffix.lower() not in ({".html", ".htm"} if suffix == ".html" else {suffix}):
        raise InputError(f"expected a {suffix} file", out)
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InputError(f"cannot write the report here ({parent} is not a writable folder)", out)
