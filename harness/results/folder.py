"""The run folder: the only module that knows its paths, and that reads and writes what is in it.

    <out>/manifest.json                     Manifest (harness.results.schema)
    <out>/scenario.yaml                     the scenario as given
    <out>/cells/<cell>/result.json          CellResult: one TaskRecord per task kind; rewritten as tasks finish
    <out>/cells/<cell>/scores.npz           the scoring task's per-row scores, one array per corpus file
    <out>/cells/<cell>/pr_curve.csv         threshold,precision,recall at every distinct score
    <out>/cells/<cell>/handoff.pkl          what the scoring task hands the timing task (model, windows)
    <out>/nab/<cell>/<category>/<cell>_<file>.csv   ok cells' scores in NAB's results layout (at render)
    <out>/table.csv, table.md, leaderboard.csv, leaderboard.md, pr_curves.png, crossover.png (timing.sweep)
    <out>/review/log.csv                    the review log (harness.results.review_log's format, harness.feedback.log's
                                            entries): rebuilt at render, verdicts kept
    <out>/review/feedback.csv, feedback.md  `harness feedback evaluate`'s table
    <out>/review/labelstudio-tasks.json, labelstudio-config.xml   `harness feedback export`
    <out>/review/labelstudio-project.json  `harness feedback push`: the Label Studio project (its server and id)

Every write is atomic (harness.atomic). A task's artefacts are written before its record, and the record is
what `--resume` trusts: a task is done when its record says `ok`, so an interruption between the two costs
that task a rerun, never a wrong result. Anything unreadable is an InputError naming the file.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from harness.atomic import write_bytes, write_json, write_text
from harness.corpus.layout import Corpus
from harness.errors import InputError
from harness.results.review_log import Entry, parse, render
from harness.results.schema import SCHEMA_VERSION, CellResult, Manifest, TaskRecord
from harness.scenario import Cell
from harness.scoring.results_layout import results_csv, results_path

# What tasks hand over, by name; each is stored as its own file.
SCORES = "scores"  # list of float64 arrays, one per corpus file
CURVE = "curve"  # {"threshold", "precision", "recall"}: arrays
HANDOFF = "handoff"  # bytes, opaque to the folder (pickled by the task that made it)
_FILES = {SCORES: "scores.npz", CURVE: "pr_curve.csv", HANDOFF: "handoff.pkl"}
FLAME = re.compile(r"^flame-[A-Za-z0-9_.-]+\.svg$")  # a py-spy flame graph of a load task, stored under its own name


def _file(name: str) -> str:
    if name in _FILES:
        return _FILES[name]
    if FLAME.match(name):
        return name
    raise KeyError(f"unknown artefact {name!r}")


class RunFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # --- paths (private: callers ask for what they need) ------------------------------------------------------
    @property
    def _manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def manifest_file(self) -> Path:
        """For messages that must name the file."""
        return self._manifest

    def _cell(self, cell_id: str) -> Path:
        return self.root / "cells" / cell_id

    def _result(self, cell_id: str) -> Path:
        return self._cell(cell_id) / "result.json"

    def _nab(self, cell_id: str) -> Path:
        return self.root / "nab" / cell_id

    # --- the folder itself --------------------------------------------------------------------------------------
    def check_new(self) -> None:
        """A folder a fresh run can write into: absent or empty, and writable. InputError otherwise."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError("--out must be a folder, a file is in the way", self.root)
        if self.root.is_dir() and any(self.root.iterdir()):
            raise InputError("already exists and is not empty; use another --out, or --resume to finish that run", self.root)
        self._check_writable()

    def _check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_bytes(self.root / ".write-check", b"")
            (self.root / ".write-check").unlink()
        except OSError as exc:
            raise InputError(f"cannot write the results folder here ({exc.strerror or exc})", self.root) from None

    def read_manifest(self) -> Manifest:
        """The manifest of an existing run (for --resume): one clear InputError if missing, corrupt or foreign."""
        if not self.root.is_dir():
            raise InputError("--resume needs an existing run folder", self.root)
        if not self._manifest.is_file():
            raise InputError("--resume needs a run folder with a manifest.json", self.root)
        try:
            data = json.loads(self._manifest.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"corrupt, not JSON ({exc}); start a new run with another --out", self._manifest) from None
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise InputError(
                f"written by another version of harness (schema {version}, this one reads {SCHEMA_VERSION}); "
                "start a new run with another --out",
                self._manifest,
            )
        try:
            return Manifest.model_validate(data)
        except ValidationError as exc:
            raise InputError(f"not a harness manifest ({_first(exc)}); start a new run with another --out", self._manifest) from None

    def read_run(self) -> tuple[Manifest, list[CellResult]]:
        """A finished (or interrupted) run, read only: its manifest and every cell recorded so far, for the history,
        comparisons, exports and the review loop; one InputError line if it is not a run folder."""
        if not self._manifest.is_file():
            raise InputError("not a run folder (no manifest.json): give a folder written by `harness run`", self.root)
        try:
            manifest = Manifest.model_validate_json(self._manifest.read_text())
        except ValueError as exc:
            raise InputError(f"unreadable manifest.json ({str(exc).splitlines()[0]})", self.root) from None
        results = []
        for cell_id in manifest.cells:
            path = self._result(cell_id)
            if path.is_file():
                try:
                    results.append(CellResult.from_data(json.loads(path.read_text())))
                except ValueError as exc:
                    raise InputError(f"unreadable cell result ({str(exc).splitlines()[0]})", path) from None
        return manifest, results

    def result_file(self, cell_id: str) -> Path | None:
        """The cell's result.json, for exports that copy it whole; None before the cell has one."""
        path = self._result(cell_id)
        return path if path.is_file() else None

    def report_files(self) -> list[Path]:
        """The run's tables, manifest and plots that exist, for exports that copy them whole."""
        names = ("table.csv", "table.md", "serving.csv", "serving.md", "leaderboard.md", "manifest.json")
        return [self.root / n for n in names if (self.root / n).is_file()] + sorted(self.root.glob("*.png"))

    def write_manifest(self, manifest: Manifest) -> None:
        write_text(self._manifest, manifest.model_dump_json(indent=2) + "\n")

    def write_scenario(self, text: str) -> None:
        write_text(self.root / "scenario.yaml", text)

    # --- cells ------------------------------------------------------------------------------------------------
    def read_cell(self, cell: Cell, kinds: list[str]) -> CellResult:
        """The cell's result so far (no file yet: nothing done). A file from another run's cell, or one that does
        not parse, is an InputError naming it."""
        path = self._result(cell.id)
        if not path.is_file():
            return CellResult(cell=cell, kinds=kinds)
        try:
            raw = path.read_bytes()
            if not raw.strip():
                raise ValueError("the file is empty")
            result = CellResult.from_data(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            why = _first(exc) if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
            raise InputError(f"unreadable cell result ({why}); delete it to rerun that cell", path) from None
        if result.cell != cell:
            raise InputError("belongs to another definition of this cell; start a new run with another --out", path)
        return result.model_copy(update={"kinds": kinds})

    def record(self, result: CellResult, kind: str, record: TaskRecord, artefacts: dict[str, Any]) -> CellResult:
        """Store a finished task: its artefacts first, then the cell's result.json with the task's record."""
        folder = self._cell(result.cell.id)
        if SCORES in artefacts:
            shutil.rmtree(self._nab(result.cell.id), ignore_errors=True)  # exported from the scores it replaces
        for name, value in artefacts.items():
            write_bytes(folder / _file(name), _encode(name, value))
        updated = result.model_copy(update={"tasks": {**result.tasks, kind: record}})
        write_text(self._result(result.cell.id), updated.model_dump_json(indent=2) + "\n")
        return updated

    def artefacts(self, cell_id: str, names: list[str]) -> dict[str, Any]:
        """Artefacts a finished task left, for the tasks that depend on it (a resumed run)."""
        out = {}
        for name in names:
            path = self._cell(cell_id) / _file(name)
            if not path.is_file():
                raise InputError(f"missing: the {name} of a finished task; delete result.json to rerun the cell", path)
            out[name] = _decode(name, path.read_bytes())
        return out

    def scores(self, cell_id: str) -> list[np.ndarray] | None:
        path = self._cell(cell_id) / _FILES[SCORES]
        return _decode(SCORES, path.read_bytes()) if path.is_file() else None

    def curve(self, cell_id: str) -> dict[str, np.ndarray] | None:
        path = self._cell(cell_id) / _FILES[CURVE]
        return _decode(CURVE, path.read_bytes()) if path.is_file() else None

    # --- derived views: rebuilt from the cells at every render ------------------------------------------------
    def export_nab(self, cell_id: str, corpus: Corpus | None) -> None:
        """An ok cell's scores in NAB's results layout (so NAB's scorer, or `harness nab score`, can check every
        number), written once and renamed into place whole; a cell that is not ok (corpus None) has none."""
        target = self._nab(cell_id)
        if corpus is None:
            shutil.rmtree(target, ignore_errors=True)
            return
        scores = self.scores(cell_id)
        if target.is_dir() or scores is None:
            return
        staging = target.with_name(f".{cell_id}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for f, s in zip(corpus.files, scores):
            write_bytes(results_path(staging, cell_id, f), results_csv(f, s))
        os.replace(staging, target)

    def nab_dir(self, cell_id: str) -> Path:
        return self._nab(cell_id)

    def write_table(self, csv: str, markdown: str) -> None:
        write_text(self.root / "table.csv", csv)
        write_text(self.root / "table.md", markdown)

    def table_markdown(self) -> str:
        return (self.root / "table.md").read_text()

    def write_leaderboard(self, csv: str, markdown: str) -> None:
        write_text(self.root / "leaderboard.csv", csv)
        write_text(self.root / "leaderboard.md", markdown)

    def leaderboard_markdown(self) -> str:
        path = self.root / "leaderboard.md"
        if not path.is_file():
            raise InputError("no leaderboard.md: expected a results folder written by `harness run`", self.root)
        return path.read_text()

    def write_plot(self, png: bytes | None, name: str = "pr_curves.png") -> None:
        """A plot of the run (pr_curves.png, crossover.png); removed when there is none."""
        target = self.root / name
        if png is None:
            target.unlink(missing_ok=True)
        else:
            write_bytes(target, png)


    def write_serving(self, table: tuple[str, str] | None, plot: bytes | None) -> None:
        """The serving table (csv, markdown) and the latency-throughput plot; removed when there is none."""
        for name, content in (("serving.csv", table and table[0]), ("serving.md", table and table[1]),
                              ("latency_vs_throughput.png", plot)):
            target = self.root / name
            if content is None:
                target.unlink(missing_ok=True)
            else:
                write_bytes(target, content if isinstance(content, bytes) else content.encode())

    def write_thresholds(self, table: tuple[str, str] | None) -> None:
        """The threshold policies' table (csv, markdown); removed when there is none."""
        for name, content in (("thresholds.csv", table and table[0]), ("thresholds.md", table and table[1])):
            if content is None:
                (self.root / name).unlink(missing_ok=True)
            else:
                write_text(self.root / name, content)

    # --- the review loop (harness.feedback; the log's format: harness.results.review_log) -----------------------
    @property
    def review_log(self) -> Path:
        return self.root / "review" / "log.csv"

    def read_review(self) -> list[Entry] | None:
        """The review log's entries (None: the run has none)."""
        path = self.review_log
        return parse(path.read_text(), path) if path.is_file() else None

    def write_review(self, entries: list[Entry]) -> None:
        write_text(self.review_log, render(entries))

    def write_feedback(self, csv: str, markdown: str) -> Path:
        write_text(self.root / "review" / "feedback.csv", csv)
        write_text(self.root / "review" / "feedback.md", markdown)
        return self.root / "review" / "feedback.md"

    def read_feedback(self) -> list[dict[str, str]] | None:
        """`harness feedback evaluate`'s last table, as CSV rows (None: it has not been run)."""
        import csv

        path = self.root / "review" / "feedback.csv"
        return list(csv.DictReader(path.read_text().splitlines())) if path.is_file() else None

    def write_labelstudio(self, tasks: list, config: str) -> tuple[Path, Path]:
        paths = self.root / "review" / "labelstudio-tasks.json", self.root / "review" / "labelstudio-config.xml"
        write_json(paths[0], tasks)
        write_text(paths[1], config)
        return paths

    @property
    def labelstudio_project_file(self) -> Path:
        return self.root / "review" / "labelstudio-project.json"

    def labelstudio_project(self, url: str) -> int | None:
        """The id of the project `harness feedback push` made for this run on the Label Studio at `url` (None:
        none yet, or it was made on another server)."""
        path = self.labelstudio_project_file
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            return int(record["project"]) if record["url"] == url else None
        except (ValueError, KeyError, TypeError):
            raise InputError("expected {\"url\": ..., \"project\": id}, as `harness feedback push` writes it", path) from None

    def write_labelstudio_project(self, url: str, project: int) -> Path:
        write_json(self.labelstudio_project_file, {"url": url, "project": project})
        return self.labelstudio_project_file

    def serving_markdown(self) -> str | None:
        path = self.root / "serving.md"
        return path.read_text() if path.is_file() else None


def _encode(name: str, value: Any) -> bytes:
    if name == SCORES:
        buf = io.BytesIO()
        np.savez(buf, *[np.asarray(v, np.float64) for v in value])
        return buf.getvalue()
    if name == CURVE:
        rows = zip(*(np.asarray(value[k]).tolist() for k in ("threshold", "precision", "recall")))
        return ("\n".join(["threshold,precision,recall", *(f"{t!r},{p!r},{r!r}" for t, p, r in rows)]) + "\n").encode()
    return bytes(value)


def _decode(name: str, raw: bytes) -> Any:
    if name == SCORES:
        with np.load(io.BytesIO(raw)) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]
    if name == CURVE:
        table = np.loadtxt(io.StringIO(raw.decode()), delimiter=",", skiprows=1, ndmin=2)
        return {k: table[:, i] if table.size else np.zeros(0) for i, k in enumerate(("threshold", "precision", "recall"))}
    return raw


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
