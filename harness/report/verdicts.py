"""The three success criteria a report opens with, judged from the runs given (PASS / FAIL / NOT MEASURED):
(1) the best detector against HTM and Twitter ADVec on NAB, in-sample and cross-validated; (2) a quantized or
pruned variant losing < 5% NAB at >= 2x speed, against torch fp32 and against its own runtime's fp32; (3) the
scenarios' SLA verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from harness.report.runs import LoadedRun


class Verdict(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    NOT_MEASURED = "NOT MEASURED"


@dataclass(frozen=True)
class Evidence:
    """One figure behind a verdict, and the run it comes from."""

    text: str  # e.g. "ensemble: NAB standard 71.84 vs HTM 70.10 (in-sample)"
    run: str  # LoadedRun.name


@dataclass(frozen=True)
class Criterion:
    number: int  # 1, 2, 3
    title: str  # what is asked, in a line
    verdict: Verdict
    reason: str  # one line: why this verdict (for NOT MEASURED: what would make it measurable)
    evidence: list[Evidence] = field(default_factory=list)
    section: str = ""  # the HTML anchor of the report section that shows the data


def criteria(runs: list[LoadedRun]) -> list[Criterion]:
    """The three criteria, always three, in order."""
    raise NotImplementedError  # the report-core helper implements this
