"""What every task kind shares: the work it needs (`Needs`, read by the runner's placement), the `Task` itself
and the shared `RunContext`. `harness.tasks.execute` runs a task in plain Python and turns any failure into a
record.

A task kind is a module with `run(task, context, inputs, progress) -> (result, artefacts)`: `inputs` are the
artefacts of the tasks it depends on (by kind), `progress(n)` reports n more units done, `result` is the kind's
typed result (harness.results.schema) and `artefacts` what the run folder stores and dependents receive.
Nothing here imports Ray: the runner calls `execute` inside its Ray tasks, tests call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from harness.corpus.layout import Corpus
from harness.load.settings import LoadSpec
from harness.scenario import Cell
from harness.scoring.profiles import Profile
from harness.serving.config import ServeSpec
from harness.targets import TargetSpec, labels_for
from harness.thresholds.spec import PolicySpec
from harness.timing import TimingSpec

ReportProgress = Callable[[int], None]  # reports n more units done


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
    """Everything a run's tasks share, shipped to the workers once: the corpus and NAB's settings, and the
    scenario's sections each kind reads, as their components define them."""

    corpus: Corpus
    profiles: tuple[Profile, ...]
    thresholds: dict[str, dict[str, float]] | None  # per detector label, per profile; None: optimise
    probation_percent: float
    timing: TimingSpec = field(default_factory=TimingSpec)
    serve: ServeSpec = field(default_factory=ServeSpec)
    load: LoadSpec | None = None  # None: no load tasks
    targets: dict[str, TargetSpec] = field(default_factory=dict)  # by name
    policies: list[PolicySpec] = field(default_factory=list)

    def labels(self, cell: Cell) -> dict[str, str]:
        """The node labels of the target `cell` runs on (none without a target)."""
        return labels_for(self.targets, cell.target)
