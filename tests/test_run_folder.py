"""The run folder, the only owner of a run's paths: typed records round-trip, a task's artefacts come back for the
tasks after it, and the derived views (nab/<cell>/, the plot) show ok cells only, so a cell whose timing failed
leaves neither NAB-layout scores nor a curve behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.corpus.synthetic import write_corpus
from harness.plan import plan
from harness.results.folder import HANDOFF, RunFolder
from harness.results.schema import CellResult, Status
from harness.run import new_manifest, render
from harness.tasks import RunContext, execute, failed, plan_tasks

SCENARIO = """name: folder
corpus: {{path: {root}}}
detectors:
  - type: userdet:LastValueJump
  - type: autoencoder
    label: ae
    params: {{window: 8, hidden: 8, bottleneck: 2, epochs: 1}}
backends:
  - {{backend: onnxruntime}}
"""


@pytest.fixture()
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # userdet
    root = write_corpus(tmp_path / "corpus", 4, 500)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(root=root))
    p = plan(scenario)
    folder = RunFolder(tmp_path / "run")
    folder.check_new()
    folder.write_manifest(new_manifest(p))
    return p, folder


def test_records_and_artefacts_round_trip_and_failed_cells_leave_no_derived_views(run) -> None:
    p, folder = run
    context = RunContext(p.corpus, p.profiles, None, 0.15, p.scenario.timing)
    tasks = plan_tasks(p.cells, p.scenario.timing, len(p.corpus.files))
    results = {c.id: folder.read_cell(c, ["score", "timing"] if c.backend else ["score"]) for c in p.cells}
    assert all(r.status == Status.PENDING and not r.tasks for r in results.values())
    for task in (t for t in tasks if t.kind == "score"):
        record, artefacts = execute(task, context, {})
        assert record.status == Status.OK, record.traceback
        results[task.cell.id] = folder.record(results[task.cell.id], "score", record, artefacts)
    backend_cell = next(c for c in p.cells if c.backend)
    # the timing of the backend cell fails
    results[backend_cell.id] = folder.record(results[backend_cell.id], "timing", failed("timing", "RuntimeError: no"), {})
    for cell in p.cells:  # what is on disk reads back the same
        again = folder.read_cell(cell, results[cell.id].kinds)
        assert again == results[cell.id]
    assert results["LastValueJump"].status == Status.OK
    assert results[backend_cell.id].status == Status.FAILED and results[backend_cell.id].error == "timing: RuntimeError: no"
    handoff = folder.artefacts(backend_cell.id, [HANDOFF])[HANDOFF]
    assert isinstance(handoff, bytes) and len(handoff) > 100
    assert [len(s) for s in folder.scores("LastValueJump")] == [f.n_rows for f in p.corpus.files]

    render(folder, p, results)
    assert len(list(folder.nab_dir("LastValueJump").rglob("*.csv"))) == len(p.corpus.files)
    assert not folder.nab_dir(backend_cell.id).exists()  # scored, but the cell failed: no NAB-layout scores
    table = (folder.root / "table.csv").read_text()
    assert "timing: RuntimeError: no" in table

    # the plot shows ok cells only: with the only ok cell failing too, there is no plot at all
    results["LastValueJump"] = folder.record(results["LastValueJump"], "score", failed("score", "ValueError: later"), {})
    render(folder, p, results)
    assert not folder.nab_dir("LastValueJump").exists() and not (folder.root / "pr_curves.png").exists()


def test_a_cell_result_of_another_definition_is_refused(run, tmp_path) -> None:
    from harness.errors import InputError

    p, folder = run
    cell = p.cells[0]
    result = folder.record(CellResult(cell=cell, kinds=["score"]), "score", failed("score", "x"), {})
    path = folder.root / "cells" / cell.id / "result.json"
    data = json.loads(path.read_text())
    data["cell"]["params"] = {"gain": 3.0}
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="another definition of this cell"):
        folder.read_cell(cell, result.kinds)
