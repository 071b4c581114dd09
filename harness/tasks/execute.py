"""Running one task in plain Python: the kind's `run`, and any failure turned into a failed record (never an
exception), so one detector's or backend's failure is the cell's, not the run's. The runner calls `execute`
inside its Ray tasks; tests call it directly."""

from __future__ import annotations

import time
import traceback
from typing import Any

from harness.environment import now
from harness.results.schema import Status, TaskRecord
from harness.tasks import load, score, timing
from harness.tasks.base import ReportProgress, RunContext, Task

KINDS = {"score": score, "timing": timing, "load": load}


def execute(task: Task, context: RunContext, inputs: dict[str, dict[str, Any]], progress: ReportProgress | None = None,
            cluster: Any = None) -> tuple[TaskRecord, dict[str, Any]]:
    """Run one task; a failure is data (a failed record with the error and traceback), never an exception.
    `cluster`: what a kind that runs on the driver (ON_DRIVER) drives, from the runner."""
    kind = KINDS[task.kind]
    started, t0 = now(), time.perf_counter()
    try:
        extra = (cluster,) if getattr(kind, "ON_DRIVER", False) else ()
        result, artefacts = kind.run(task, context, inputs, progress or (lambda n: None), *extra)
        return TaskRecord(kind=task.kind, status=Status.OK, started_at=started, seconds=time.perf_counter() - t0, result=result), artefacts
    except Exception as exc:  # noqa: BLE001 - any detector or backend failure is recorded, never fatal to the run
        return failed(task.kind, exc, started, time.perf_counter() - t0, traceback.format_exc()), {}


def failed(kind: str, error: BaseException | str, started: str | None = None, seconds: float = 0.0, tb: str | None = None) -> TaskRecord:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return TaskRecord(
        kind=kind,
        status=Status.FAILED,
        started_at=started,
        seconds=seconds,
        error=(message.splitlines() or [""])[0],
        traceback=tb,
    )
