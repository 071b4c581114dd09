"""`harness export mlflow RUN`: each cell of a run as one MLflow run (parameters, metrics, and the run's tables
and plots and the cell's result.json as artefacts), for teams that track experiments in MLflow.

Needs the optional extra: `pip install 'harness[mlflow]'` (mlflow-skinny). A tracking server (`http://...`) is the
usual target; a local folder (`file:/path`) works too: MLflow keeps its file store in maintenance mode, and the
export opts in to it for such a URI.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import InputError
from harness.history.rows import figures
from harness.results.folder import RunFolder


def export_run(folder: str | Path, tracking_uri: str, experiment: str | None = None) -> list[str]:
    """Log every recorded cell of `folder`; returns the MLflow run ids."""
    try:
        import mlflow
    except ImportError:
        raise InputError("mlflow is not installed: pip install 'harness[mlflow]'", field="export mlflow") from None
    root = Path(folder)
    run_folder = RunFolder(root)
    manifest, results = run_folder.read_run()
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # not two lines per cell: one summary
    mlflow.set_tracking_uri(tracking_uri)
    scenario = manifest.scenario.get("resolved", {}).get("name", "harness")
    try:  # the first call that reaches the server: a wrong URI fails here (after MLflow's own retries)
        mlflow.set_experiment(experiment or scenario)
    except mlflow.exceptions.MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the tracking server refused or did not answer: {first[:300]}", field="--tracking-uri") from None
    by_cell: dict[str, dict[str, float]] = {}
    for f in figures(results):
        by_cell.setdefault(f.cell, {})[_metric_key(f.metric)] = f.value
    code = manifest.environment.get("code", {})
    shared = run_folder.report_files()
    ids = []
    for r in results:
        params = {**{f"param.{k}": v for k, v in r.cell.params.items()}, "cell": r.cell.id, "detector": r.cell.detector,
                  "backend": r.cell.backend.backend if r.cell.backend else "none",
                  "precision": r.cell.backend.precision if r.cell.backend else "none", "target": r.cell.target or "none",
                  "scenario": scenario, "status": r.status.value, "git_commit": code.get("git_commit") or "",
                  "tree_sha256": code.get("tree_sha256") or "", "run_folder": str(root.resolve())}
        with mlflow.start_run(run_name=r.cell.id) as run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            if by_cell.get(r.cell.id):
                mlflow.log_metrics(by_cell[r.cell.id])
            for path in shared:
                mlflow.log_artifact(str(path))
            result = run_folder.result_file(r.cell.id)
            if result is not None:
                mlflow.log_artifact(str(result), artifact_path="cell")
            ids.append(run.info.run_id)
    return ids


def _metric_key(metric: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces: `p95_ms[http peak]` → `p95_ms/http/peak`."""
    if "[" in metric:
        name, _, where = metric.partition("[")
        return f"{name}/{where.rstrip(']').replace(' ', '/')}"
    return metric
