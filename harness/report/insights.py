"""Actionable insights generated from the runs' data: each a sentence a stakeholder can act on, with the number
behind it and the run it comes from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.report.runs import LoadedRun


@dataclass(frozen=True)
class Insight:
    topic: str  # "ship", "int8", "edge", "thresholds", "feedback", "regressions"
    text: str  # the advice, one or two sentences, with its figure in it
    figure: str  # the number behind it, e.g. "2.31x"
    run: str  # LoadedRun.name
    section: str  # the HTML anchor of the section that shows the data


def insights(runs: list[LoadedRun], history: Path | None = None) -> list[Insight]:
    """Every insight the runs support, in the topics' order; none for a topic the runs say nothing about.
    `history`: the history store (harness.history.store) to find what regressed since each run's previous run."""
    raise NotImplementedError  # the report-core helper implements this
