"""What every task kind shares: the work it needs (`Needs`, read by the runner's placement), the `Task` itself,
the shared `RunContext`, and `execute`, which runs a task in plain Python and turns any failure into a record.

A task kind is a module with `run(task, context, inputs, progress) -> (result, artefacts)`: `inputs` are the
artefacts of the tasks it depends on (by kind), `progress(n)` reports n more units done, `result` is the kind's
typed result (harness.results.schema) and `artefacts` what the run folder stores and dependents receive.
Nothing here imports Ray: the runner calls `execute` inside its Ray tasks, tests call it directly.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.corpus.layout import Corpus
from harness.environment import now
from harness.results.schema import Status, TaskRecord
from harness.scenario import Cell
from harness.scoring.profiles import Profile

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Needs:
    """What a task needs from a node: CPUs, memory, node labels that must match, and whether it must be alone
    there (`exclusive`: it reserves every CPU of the node, so no other task runs beside it)."""

    cpus: float = 1.0
    memory_bytes: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exclusive: bool = False


@dataclass(frozen=True)
class Task:
    kind: str
    cell: Cell
    needs: Needs
    after: tuple[str, ...] = ()  # kinds of this cell's tasks whose artefacts this one takes as inputs
    units: int = 1  # progress units (a scoring task: one per corpus file)

    @property
    def id(self) -> str:
        return task_id(self.cell.id, self.kind)

    @property
    def dependencies(self) -> tuple[str, ...]:
        """The ids of the tasks this one runs after."""
        return tuple(task_id(self.cell.id, kind) for kind in self.after)


def task_id(cell_id: str, kind: str) -> str:
    return f"{cell_id}/{kind}"


@dataclass
class RunContext:
    """Everything a run's tasks share, shipped to the workers once."""

    corpus: Corpus
    profiles: tuple[Profile, ...]
    thresholds: dict[str, dict[str, float]] | None  # per detector label, per profile; None: optimise
    probation_percent: float
    timing: dict[str, Any]  # the scenario's timing settings (TimingSpec)
    serve: dict[str, Any] | None = None  # the scenario's serve settings (ServeSpec)
    load: dict[str, Any] | None = None  # the scenario's load settings (LoadSpec); None: no load tasks
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # the scenario's targets (TargetSpec) by name
    policies: list[dict[str, Any]] = field(default_factory=list)  # the scenario's threshold policies (PolicySpec)


def execute(task: Task, context: RunContext, inputs: dict[str, dict[str, Any]], progress: Progress | None = None,
            cluster: Any = None) -> tuple[TaskRecord, dict[str, Any]]:
    """Run one task; a failure is data (a failed record with the error and traceback), never an exception.
    `cluster`: what a kind that runs on the driver (ON_DRIVER) drives, from the runner."""
    from harness.tasks import KINDS

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
