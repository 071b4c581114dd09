"""The run history: every run indexed into an embedded SQLite file (`store`), compared run against run with
noise-aware verdicts (`compare`), a metric's trend over runs (`trend`), and an MLflow export (`mlflow_export`).
docs/history.md."""
