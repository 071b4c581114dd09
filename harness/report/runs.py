"""Run folders read back for a report: everything `harness report` needs, rebuilt from what the run recorded
(its cell results, leaderboard and review files), so a report never needs the run to be re-run."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.results.folder import RunFolder
from harness.results.schema import CellResult, Manifest

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class LoadedRun:
    """One run folder, read: the typed results and the tables rendered from them."""

    root: Path
    manifest: Manifest
    results: list[CellResult]  # the cells recorded so far, in the scenario's order
    table: "pd.DataFrame"  # harness.report.tables.build_table: one row per cell, with gates and SLA columns
    serving: "pd.DataFrame | None"  # one row per load run; None: nothing load-tested
    policies: "pd.DataFrame | None"  # one row per cell and threshold policy; None: no cross-validated score
    leaderboard: "pd.DataFrame | None"  # leaderboard.csv as the run wrote it (re-scoring needs the corpus)
    feedback: "pd.DataFrame | None"  # review/feedback.csv (`harness feedback evaluate`); None: not evaluated

    @property
    def name(self) -> str:
        """The folder's name: how a report cites the run."""
        return self.root.name

    @property
    def scenario(self) -> str:
        return str(self.manifest.scenario.get("resolved", {}).get("name") or self.root.name)

    def curve(self, cell_id: str) -> "dict | None":
        """The cell's precision-recall curve (threshold, precision, recall arrays), if it was scored."""
        return RunFolder(self.root).curve(cell_id)


def load_run(root: str | Path) -> LoadedRun:
    """Read one run folder; an InputError naming the folder when it is not one."""
    import pandas as pd

    from harness.report import tables

    folder = RunFolder(root)
    manifest, results = folder.read_run()
    order = {cid: i for i, cid in enumerate(manifest.cells)}
    results.sort(key=lambda r: order.get(r.cell.id, len(order)))

    def csv(path: Path) -> "pd.DataFrame | None":
        # only an empty field is missing: a detector named "null" (or "NA") is a name, not a missing value
        return pd.read_csv(io.StringIO(path.read_text()), keep_default_na=False, na_values=[""]) if path.is_file() else None

    return LoadedRun(
        root=folder.root,
        manifest=manifest,
        results=results,
        table=tables.build_table(results),
        serving=tables.build_serving_table(results),
        policies=tables.build_thresholds_table(results),
        leaderboard=csv(folder.root / "leaderboard.csv"),
        feedback=csv(folder.root / "review" / "feedback.csv"),
    )
