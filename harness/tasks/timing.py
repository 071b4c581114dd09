"""The timing task: a backend cell's latency at batch 1 and at the large batch (docs/timing.md).

It prepares the model the scoring task trained again, from the artefacts that task cached (so the export and
quantization are not timed and not repeated), and measures `infer` on real windows of that file.
"""

from __future__ import annotations

from typing import Any

from harness.results.folder import HANDOFF
from harness.results.schema import LatencyFigures, TimingResult
from harness.tasks.base import ReportProgress, RunContext, Task
from harness.tasks.handoff import ModelHandoff


def run(task: Task, ctx: RunContext, inputs: dict[str, Any], progress: ReportProgress) -> tuple[TimingResult, dict[str, Any]]:
    from harness.backends import prepare
    from harness.timing import time_batches

    job = ModelHandoff.from_bytes(inputs["score"][HANDOFF])
    compiled = prepare(job.spec, job.model, job.calibration)
    settings = ctx.timing.measurement()
    figures = time_batches(compiled.infer, job.windows, **settings)
    progress(1)
    return (
        TimingResult(
            batch1=LatencyFigures(**figures["batch1"]),
            batchN=LatencyFigures(**figures["batchN"]),
            sweep={size: LatencyFigures(**f) for size, f in figures["sweep"].items()},
            file=job.file,
            settings=settings,
            exclusive=task.needs.exclusive,
            cache=compiled.info.get("cache"),
        ),
        {},
    )
