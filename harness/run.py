"""`harness run`: validate everything, then fan cells out on Ray and write the run folder.

Nothing is written until the scenario, corpus and thresholds have all been validated. Each finished cell is
written atomically (its result.json last), so an interrupted run keeps every finished cell and `--resume`
runs only what is missing or failed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.atomic import write_bytes, write_json, write_text
from harness.corpus.layout import Corpus, check_layout, load_corpus
from harness.errors import InputError
from harness.scenario import Cell, Scenario, load_scenario
from harness.scoring.profiles import Profile, load_profiles, load_thresholds
from harness.scoring.results_layout import results_csv, results_path
from harness import manifest as mf
from harness import report


@dataclass
class Plan:
    scenario_path: Path
    scenario: Scenario
    scenario_text: str
    cells: list[Cell]
    corpus_root: Path
    corpus: Corpus
    profiles: tuple[Profile, ...]
    thresholds: dict[str, dict[str, float]] | None


def corpus_root(scenario: Scenario) -> Path:
    if scenario.corpus.path is not None:
        return check_layout(scenario.corpus.path)
    from harness.corpus.synthetic import cached_corpus_root

    return cached_corpus_root(scenario.corpus.synthetic.seed, scenario.corpus.synthetic.rows)


def plan(scenario_path: str | Path, corpus_override: str | None = None, load_data: bool = True) -> Plan:
    """Everything a run needs, validated; raises InputError before anything is written."""
    scenario_path = Path(scenario_path)
    scenario, cells, text = load_scenario(scenario_path, corpus_override)
    if corpus_override is not None:
        check_layout(corpus_override)
    elif scenario.corpus.path is not None:
        try:
            check_layout(scenario.corpus.path)
        except InputError as exc:
            raise InputError(exc.detail, scenario_path, f"corpus.path ({scenario.corpus.path})") from None
    given_root = Path(scenario.corpus.path) if scenario.corpus.path else None
    profiles = load_profiles(given_root / "config" / "profiles.json" if given_root else None)
    thresholds = None
    if scenario.scoring.thresholds != "optimize":
        try:
            thresholds = {c.detector: load_thresholds(scenario.scoring.thresholds, c.detector, profiles) for c in cells}
        except InputError as exc:
            raise InputError(f"{exc.path}: {exc.detail}", scenario_path, "scoring.thresholds") from None
    if not load_data:
        return Plan(scenario_path, scenario, text, cells, given_root or Path(), Corpus(files=[]), profiles, thresholds)
    root = corpus_root(scenario)
    return Plan(scenario_path, scenario, text, cells, root, load_corpus(root), profiles, thresholds)


def default_out(scenario: Scenario) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("results") / f"{stamp}-{scenario.name}"


def prepare_out(out: Path, p: Plan, resume: bool) -> set[str]:
    """Create or reopen the run folder; returns the ids of cells already done (status ok)."""
    if out.exists() and not out.is_dir():
        raise InputError("--out must be a folder, a file is in the way", out)
    if resume:
        manifest_path = out / "manifest.json"
        if not manifest_path.is_file():
            raise InputError("--resume needs a run folder with a manifest.json", out)
        previous = json.loads(manifest_path.read_text())
        if previous.get("cells") != [c.id for c in p.cells]:
            raise InputError("--resume: this folder was run with different cells; use a new --out", out)
        return {r["cell"]["id"] for r in report.read_results(out, [c.id for c in p.cells]) if r["status"] == "ok"}
    if out.exists() and any(out.iterdir()):
        raise InputError("already exists and is not empty; use another --out, or --resume to finish that run", out)
    return set()


def write_cell(out: Path, cell: Cell, result: dict[str, Any], corpus: Corpus) -> None:
    """Per-row scores in NAB's results layout, the PR curve, then result.json (written last: it marks done)."""
    folder = report.cell_dir(out, cell.id)
    record = {"cell": cell.model_dump(), **{k: v for k, v in result.items() if k not in ("scores", "curve")}}
    if result["status"] in ("ok", "scored") and "scores" in result:
        nab_dir = out / "nab" / cell.id
        for f, s in zip(corpus.files, result["scores"]):
            write_bytes(results_path(nab_dir, cell.id, f), results_csv(f, s))
        curve = result["curve"]
        lines = ["threshold,precision,recall"] + [
            f"{t!r},{p!r},{r!r}" for t, p, r in zip(*(np.asarray(curve[k]).tolist() for k in ("threshold", "precision", "recall")))
        ]
        write_text(folder / "pr_curve.csv", "\n".join(lines) + "\n")
    write_json(folder / "result.json", record)


def execute(
    scenario_path: str | Path,
    out: str | Path | None = None,
    address: str | None = None,
    corpus_override: str | None = None,
    resume: bool = False,
) -> tuple[Path, list[str]]:
    """Run (or resume) a scenario; returns the run folder and the ids of cells that failed."""
    p = plan(scenario_path, corpus_override)
    out = Path(out) if out is not None else default_out(p.scenario)
    done = prepare_out(out, p, resume)
    manifest = {
        "scenario": {
            "file": str(p.scenario_path),
            "given": p.scenario_text,
            "resolved": p.scenario.model_dump(mode="json"),
        },
        "corpus": {"root": str(p.corpus_root), "files": len(p.corpus.files), "rows": p.corpus.n_rows},
        "cells": [c.id for c in p.cells],
        "command": sys.argv,
        **mf.environment(),
        "started_at": mf.now(),
        "finished_at": None,
        "status": "running",
    }
    if resume:
        manifest["resumed_from"] = json.loads((out / "manifest.json").read_text()).get("started_at")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "scenario.yaml", p.scenario_text)
    write_json(out / "manifest.json", manifest)

    from harness.runner import RayRunner
    from tqdm import tqdm

    todo = [c for c in p.cells if c.id not in done]
    by_id = {c.id: c for c in p.cells}
    try:
        from harness.detectors import user_code_path

        code = [str(path) for c in todo if (path := user_code_path(c.type)) is not None]
        with RayRunner(address, code) as runner:
            manifest["ray"] = runner.describe()
            write_json(out / "manifest.json", manifest)
            with tqdm(total=len(p.cells), initial=len(done), desc="cells", unit="cell", file=sys.stderr) as bar:
                for cell, result in runner.run(
                    [c.model_dump() for c in todo],
                    p.corpus,
                    p.profiles,
                    p.thresholds,
                    p.scenario.scoring.probation_percent,
                    p.scenario.timing.model_dump(),
                ):
                    write_cell(out, by_id[cell["id"]], result, p.corpus)
                    if result["status"] == "scored":  # its timing comes later, alone on a node
                        continue
                    bar.update(1)
                    if result["status"] != "ok":
                        bar.write(f"cell {cell['id']} failed: {result['error']}")
        manifest["status"] = "complete"
    except KeyboardInterrupt:
        manifest["status"] = "interrupted"
        raise
    finally:
        manifest["finished_at"] = mf.now()
        write_json(out / "manifest.json", manifest)
        table = render(out, [c.id for c in p.cells], p.corpus_root)
    return out, table.loc[table["status"] != "ok", "cell"].tolist()


def render(out: Path, cell_ids: list[str], corpus_root: Path):
    """(Re)write table.csv/table.md, leaderboard and plot from the cells' result files; returns the table."""
    df = report.write_tables(out, cell_ids)
    report.write_leaderboard(out, df, corpus_root / "results" / "final_results.json")
    report.write_pr_plot(out, cell_ids)
    return df
