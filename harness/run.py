"""`harness run`: plan, then tasks, then the runner, with every finished task stored in the run folder, then the
reports.

Nothing is written until the scenario, corpus and thresholds have all been validated (harness.plan). Each
finished task is stored at once (harness.results.folder), so an interrupted run keeps every finished task and
`--resume` runs only the tasks that are missing or failed, after checking that the scenario and the corpus are
the ones the folder was started with.
"""

from __future__ import annotations

import errno
import sys
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.report import leaderboard, plots, tables
from harness.sla import verdict as sla
from harness.environment import environment, now
from harness.errors import InputError, RunStopped
from harness.metrics import RunMetrics
from harness.plan import Plan, plan
from harness.results.folder import HANDOFF, RunFolder
from harness.results.schema import CellResult, Manifest, RunStatus, Status
from harness.tasks import RunContext, Task, kinds_of, plan_tasks, task_id

HANDED_OVER = {"score": [HANDOFF]}  # what a finished task of each kind hands to the tasks after it


def default_out(p: Plan) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("results") / f"{stamp}-{p.scenario.name}"


def new_manifest(p: Plan) -> Manifest:
    return Manifest(
        scenario={"file": str(p.scenario_path), "given": p.scenario_text, "resolved": p.scenario.model_dump(mode="json")},
        corpus={
            "root": str(p.corpus_root),
            "files": len(p.corpus.files),
            "rows": p.corpus.n_rows,
            "fingerprint": p.corpus.fingerprint,
            "only": list(p.corpus.only),
        },
        cells=[c.id for c in p.cells],
        command=sys.argv,
        environment=environment(),
        started_at=now(),
    )


def check_resumable(previous: Manifest, current: Manifest, folder: RunFolder) -> None:
    """Refuse to mix results: the cells, the resolved scenario (wherever the corpus now lies) and the corpus's
    fingerprint must all be the ones the folder was started with."""
    where = folder.manifest_file
    if previous.cells != current.cells:
        raise InputError("--resume: this folder was run with different cells; use a new --out", where)
    before, after = (_flat(_as_now(m.scenario["resolved"])) for m in (previous, current))
    for key in sorted(set(before) | set(after)):
        if key != "corpus.path" and before.get(key) != after.get(key):
            raise InputError(
                f"--resume: the scenario changed at {key} (was {before.get(key)!r}, now {after.get(key)!r}); "
                "use a new --out",
                where,
            )
    if previous.corpus.get("fingerprint") != current.corpus["fingerprint"]:
        raise InputError("--resume: the corpus differs from the one this folder was run on (its data, labels or profiles); use a new --out", where)


def _as_now(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved scenario as this version writes it, so a folder started by an earlier version is compared by what
    its scenario means, not by how it was stored (e.g. every runtime's settings in each backend entry)."""
    from pydantic import ValidationError

    from harness.scenario import Scenario

    try:
        return Scenario.model_validate(resolved).model_dump(mode="json")
    except (ValidationError, InputError):
        return resolved  # not readable now: compared as stored, so the difference is named


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b[0].c": leaf}: a nested value's leaves by path, so a difference can be named precisely."""
    if isinstance(value, dict) and value:
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value:
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, v in items:
        out.update(_flat(v, key))
    return out


def tasks_to_run(tasks: list[Task], results: dict[str, CellResult]) -> list[Task]:
    """Tasks not recorded ok, and every task after one of them (its inputs are about to change)."""
    todo = {t.id for t in tasks if (r := results[t.cell.id].tasks.get(t.kind)) is None or r.status != Status.OK}
    for t in tasks:  # tasks come in dependency order
        if any(d in todo for d in t.dependencies):
            todo.add(t.id)
    return [t for t in tasks if t.id in todo]


def execute(
    scenario_path: str | Path,
    out: str | Path | None = None,
    address: str | None = None,
    corpus_override: str | None = None,
    resume: bool = False,
    only: list[str] | None = None,
    metrics: tuple[str, int] | None = None,
    metrics_file: str | Path | None = None, serve: tuple[str | None, str | None] = (None, None),
) -> Outcome:
    """Run (or resume) a scenario; returns the run folder, the cells that did not finish ok and those that failed
    their SLA. `metrics`: (host, port) to serve the run's Prometheus metrics on while it runs (harness.metrics);
    `metrics_file`: where to also write them, in Prometheus' text format, so that they outlive the run; `serve`:
    (host, token file) for serve.host and serve.token_file (--serve-host, --serve-token-file)."""
    if resume and out is None:
        raise InputError("--resume needs --out: the folder of the run to finish")
    p = plan(scenario_path, corpus_override, only, *serve)
    from harness.execution.runner import check_address

    check_address(address)
    folder = RunFolder(out if out is not None else default_out(p))
    manifest = new_manifest(p)
    if resume:
        previous = folder.read_manifest()
        check_resumable(previous, manifest, folder)
        resume_entry = {"at": now(), "command": sys.argv, "code": manifest.environment["code"]}
        manifest = previous.model_copy(update={"resumes": [*previous.resumes, resume_entry], "status": RunStatus.RUNNING, "finished_at": None})
    else:
        folder.check_new()
    load = p.scenario.load
    loaded = {c.id for c in p.cells if load is not None and load.load_tests(c.id)}
    results = {c.id: folder.read_cell(c, kinds_of(c, c.id in loaded)) for c in p.cells}
    tasks = plan_tasks(p.cells, p.scenario.timing, len(p.corpus.files), loaded, p.scenario.targets)
    todo = tasks_to_run(tasks, results)
    todo_ids = {t.id for t in todo}
    handed = {  # what finished tasks hand over to those about to run after them
        task_id(t.cell.id, kind): folder.artefacts(t.cell.id, HANDED_OVER.get(kind, []))
        for t in todo
        for kind in t.after
        if task_id(t.cell.id, kind) not in todo_ids
    }
    with ExitStack() as stack:
        # the metrics' port is taken, and the cluster joined, before anything is written: a busy port or a refused
        # token is one line with nothing left behind
        served = None
        if metrics or metrics_file:
            host, port = metrics or ("127.0.0.1", None)
            served = stack.enter_context(RunMetrics(p.scenario.name, port, host, metrics_file, folder.root))
        runner = stack.enter_context(_runner(address, todo, served))
        folder.write_scenario(p.scenario_text)
        folder.write_manifest(manifest)
        _run_and_record(p, folder, manifest, results, todo, handed, runner, served)
        ordered = [results[c.id] for c in p.cells]
        table = tables.build_table(ordered)
        if served is not None:
            for cell, held in sla.verdicts(ordered, table).items():
                served.sla(cell, results[cell].cell.target, held)
    index_in_history(folder.root)
    report = write_run_report(folder.root)  # after the indexing: the report's history trend includes this run
    return Outcome(folder.root, [cid for cid, r in results.items() if r.status != Status.OK], sla.failed(table), report)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its folder, the cells not ok, and the cells whose SLA verdict is FAIL."""

    root: Path
    not_ok: list[str]
    sla_failed: list[str]
    report: Path | None = None  # the run's report.html; None when it could not be written (a warning said why)


def _runner(address: str | None, todo: list[Task], metrics: RunMetrics | None) -> Any:
    """The Ray runner for `todo`, shipping the user detector packages its cells need."""
    from harness.detectors import user_code_path
    from harness.execution.runner import RayRunner

    return RayRunner(address, [str(path) for t in todo if (path := user_code_path(t.cell.type)) is not None], metrics)


def index_in_history(root: Path) -> None:
    """Index the run into the history store (harness.history); a failure is one warning, never the run's."""
    from harness.history.store import index_run, store_path

    path = store_path()
    if path is None:
        return
    try:
        index_run(root, path)
    except InputError as exc:  # a corrupt store, or a folder in its place: its line names the store and the remedy
        print(f"harness: warning: the run was not indexed in the history: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the run's own results are safe in its folder whatever happens here
        print(f"harness: warning: the run was not indexed in {path}: {type(exc).__name__}: {exc}", file=sys.stderr)


def write_run_report(root: Path) -> Path | None:
    """The run's report.html (harness.report.html); a failure is one warning, never the run's: the results are
    whole in the folder, and `harness report` can write it again."""
    from harness.history.store import store_path
    from harness.report.html import write_report
    from harness.report.runs import load_run

    out = root / "report.html"
    try:
        return write_report([load_run(root)], out, history=store_path())
    except Exception as exc:  # noqa: BLE001 - the run's own results are safe in its folder whatever happens here
        print(f"harness: warning: {out} was not written ({type(exc).__name__}: {exc}); "
              f"`harness report {root}` writes it", file=sys.stderr)
        return None


def _run_and_record(p: Plan, folder: RunFolder, manifest: Manifest, results: dict[str, CellResult], todo: list[Task],
                    handed: dict[str, dict[str, Any]], runner: Any, metrics: RunMetrics | None) -> None:
    """Run the tasks; whatever happens, the manifest says how the run ended and the reports are rebuilt. A full
    disk stops the run with one line (RunStopped), the tasks recorded before it kept; so does the loss of a
    joined cluster's head, from the runner's watch thread (`_head_lost`)."""
    lock = threading.Lock()  # held while a finished task is recorded: the head's watch never ends the run mid-write
    watch = runner.watch_head(lambda why: _head_lost(why, p, folder, manifest, results, lock, runner.address))
    try:
        _run_tasks(p, folder, manifest, results, todo, handed, runner, metrics, lock)
        manifest.status = RunStatus.COMPLETE
    except KeyboardInterrupt:
        manifest.status = RunStatus.INTERRUPTED
        raise
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        manifest.status = RunStatus.INTERRUPTED
        raise RunStopped(_no_space(exc, p, folder, results, runner.address)) from None
    finally:
        if watch is not None:  # the tasks are over: what follows needs no head
            watch.stop()
        manifest.finished_at = now()
        try:
            folder.write_manifest(manifest)
            render(folder, p, results)
        except OSError as exc:  # still full: the line above names it, the files there are whole (harness.atomic)
            if exc.errno not in NO_SPACE or manifest.status != RunStatus.INTERRUPTED:
                raise


NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def _resume_command(p: Plan, folder: RunFolder, address: str | None) -> str:
    where = f" --address {address}" if address else ""
    return f"harness run {p.scenario_path} --resume --out {folder.root}{where}"


def _no_space(exc: OSError, p: Plan, folder: RunFolder, results: dict[str, CellResult], address: str | None) -> str:
    kept = sum(1 for r in results.values() if r.status == Status.OK)
    return (f"no space left on the results disk (ENOSPC) writing {exc.filename or folder.root}; the run stopped, "
            f"{kept} cell(s) finished before are kept whole in {folder.root}: free space there (or move the folder), "
            f"then `{_resume_command(p, folder, address)}`")


def _head_lost(why: str, p: Plan, folder: RunFolder, manifest: Manifest, results: dict[str, CellResult],
               lock: threading.Lock, address: str | None) -> None:
    """The joined cluster's head is gone (called from the runner's watch thread while the main thread is stuck in
    Ray's calls to it): record the run as interrupted, rebuild the reports from the tasks recorded, say what to
    do in one line and end the process (exit 1) before Ray ends it without a word."""
    import os

    with lock:  # a task being recorded finishes first; none starts after
        manifest.status, manifest.finished_at = RunStatus.INTERRUPTED, now()
        try:
            folder.write_manifest(manifest)
            render(folder, p, results)
        except OSError:
            pass  # the results recorded so far are whole whatever fails here (harness.atomic)
        kept = sum(1 for r in results.values() if r.status == Status.OK)
        print(f"harness: error: {why}; the run stopped, {kept} cell(s) finished are kept in {folder.root}: restart "
              f"the head, then `{_resume_command(p, folder, address)}`", file=sys.stderr, flush=True)
        os._exit(1)


def _run_tasks(
    p: Plan,
    folder: RunFolder,
    manifest: Manifest,
    results: dict[str, CellResult],
    todo: list[Task],
    handed: dict[str, dict[str, Any]],
    runner: Any,
    metrics: RunMetrics | None,
    lock: threading.Lock,
) -> None:
    from harness.progress import ProgressBar
    from harness.serving.config import ServeSpec

    context = RunContext(
        p.corpus, p.profiles, p.thresholds, p.scenario.scoring.probation_percent, p.scenario.timing,
        serve=p.scenario.serve or ServeSpec(), load=p.scenario.load, targets=dict(p.scenario.targets),
        policies=list(p.scenario.scoring.policies),
    )
    with ProgressBar(sum(t.units for t in todo), "steps (files scored, timings, load tests)") as bar:
        manifest.ray = runner.describe()
        folder.write_manifest(manifest)
        if metrics is not None:
            metrics.planned(len({t.cell.id for t in todo}))
            bar.write(f"metrics: {metrics.where}")
        for done in runner.run(todo, context, handed, on_progress=bar.update):
            cell = done.task.cell.id
            with lock:
                results[cell] = folder.record(results[cell], done.task.kind, done.record, done.artefacts)
            if done.record.status != Status.OK:
                bar.write(f"cell {cell} failed ({done.task.kind}): {done.record.error}")
            if metrics is not None and results[cell].status != Status.PENDING:
                metrics.finished(results[cell].status == Status.OK)
                metrics.verdicts([r for r in results.values() if r.status != Status.PENDING])


def render(folder: RunFolder, p: Plan, results: dict[str, CellResult]) -> None:
    """(Re)write everything derived from the cells: the table, the ok cells' NAB-layout scores, the
    leaderboard and the precision-recall plot."""
    ordered = [results[c.id] for c in p.cells]
    table = tables.build_table(ordered)
    folder.write_table(table.to_csv(index=False), tables.markdown(table))
    ok = [r.cell.id for r in ordered if r.status == Status.OK]
    for r in ordered:
        folder.export_nab(r.cell.id, p.corpus if r.status == Status.OK else None)
    csv, md = leaderboard.leaderboard(table, p)
    folder.write_leaderboard(csv, md)
    folder.write_plot(plots.pr_plot({cid: folder.curve(cid) for cid in ok}))
    folder.write_plot(plots.crossover_plot(ordered), "crossover.png")
    policies = tables.build_thresholds_table(ordered)
    folder.write_thresholds(None if policies is None else (policies.to_csv(index=False), tables.markdown(policies)))
    write_review_log(folder, p, ordered)
    serving = tables.build_serving_table(ordered)
    folder.write_serving(None if serving is None else (serving.to_csv(index=False), tables.markdown(serving)),
                         plots.latency_plot(ordered))


def write_review_log(folder: RunFolder, p: Plan, results: list[CellResult]) -> None:
    """The review log of the ok cells' alerts and missed windows (harness.feedback), keeping verdicts already in it."""
    from harness.feedback.log import merged
    from harness.feedback.review import build_log, reviewable

    cells = reviewable(folder, results)
    previous = folder.read_review()
    if cells or previous:
        folder.write_review(merged(build_log(cells, p.corpus), previous or []))
