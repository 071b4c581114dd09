"""Task kinds and how a scenario's cells become tasks.

- `score` (harness.tasks.score): the cell's detector over every corpus file, then NAB scoring.
- `timing` (harness.tasks.timing): a backend cell's latency, after its scoring (it times the model the scoring
  trained and cached); with `timing.exclusive` it needs a node to itself.
- `load` (harness.tasks.load): the variant deployed on Ray Serve and loaded; after the scoring (its row shows
  the NAB score beside), run by the driver, alone.
"""

from __future__ import annotations

from collections.abc import Collection

from harness.scenario import Cell
from harness.targets import TargetSpec, labels_for
from harness.tasks.base import Needs, RunContext, Task, task_id
from harness.tasks.execute import KINDS, execute, failed
from harness.timing import TimingSpec


def kinds_of(cell: Cell, load: bool = False) -> list[str]:
    """The task kinds a cell needs, in dependency order (`load`: the scenario load-tests its variants)."""
    return ["score"] + (["timing"] if cell.backend is not None else []) + (["load"] if load else [])


def plan_tasks(cells: list[Cell], timing_spec: TimingSpec, files: int, load: bool | Collection[str] = False,
               targets: dict[str, TargetSpec] | None = None) -> list[Task]:
    """Every cell's tasks: a scoring task reserving the backend's threads (1 CPU without a backend), and for a
    backend cell a timing task after it, alone on its node when timing is exclusive; with `load` (True: every
    cell; else the ids of the cells load-tested), a load task after the scoring (run by the driver). A cell on a
    target (`targets`: the scenario's TargetSpecs by name) asks for that target's node labels, and keeps to its
    CPU and memory limits."""
    tasks = []
    for cell in cells:
        target = (targets or {}).get(cell.target) if cell.target else None
        labels = labels_for(targets or {}, cell.target)
        memory = target.memory if target else None
        threads = cell.backend.threads if cell.backend is not None else 1
        cpus = target.cpus if target is not None and target.cpus is not None else threads
        tasks.append(Task("score", cell, Needs(cpus=cpus, memory_bytes=memory, labels=labels), units=max(files, 1)))
        if "timing" in kinds_of(cell):
            needs = Needs(cpus=cpus, memory_bytes=memory, labels=labels, exclusive=timing_spec.exclusive)
            tasks.append(Task("timing", cell, needs, after=("score",)))
        if load is True or (load and cell.id in load):
            tasks.append(Task("load", cell, Needs(cpus=0, labels=labels, exclusive=True), after=("score",)))
    return tasks


__all__ = ["KINDS", "Needs", "RunContext", "Task", "execute", "failed", "kinds_of", "plan_tasks", "task_id"]
