"""The history store: one SQLite file (stdlib, no server) that every run is indexed into, so runs can be listed,
compared and charted long after their folders moved.

Location: `--history PATH`, else `$HARNESS_HISTORY`, else `results/history.sqlite`; `HARNESS_HISTORY=off` stops
`harness run` from indexing. Indexing a folder again (after `--resume`) replaces its rows, in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.history.rows import figures
from harness.results.folder import RunFolder

DEFAULT = Path("results") / "history.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, path TEXT, scenario TEXT, started_at TEXT, finished_at TEXT, status TEXT,
    git_commit TEXT, tree_sha256 TEXT, corpus_fingerprint TEXT, platform TEXT, cpu TEXT, nodes INTEGER);
CREATE TABLE IF NOT EXISTS cells (
    run_id TEXT, cell TEXT, detector TEXT, target TEXT, backend TEXT, precision TEXT, params TEXT, status TEXT,
    hardware TEXT, error TEXT, PRIMARY KEY (run_id, cell));
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT, cell TEXT, target TEXT, metric TEXT, value REAL, better TEXT, deterministic INTEGER,
    noise_pct REAL, unit TEXT, PRIMARY KEY (run_id, cell, metric));
"""


def store_path(given: str | Path | None = None) -> Path | None:
    """Where the history lives; None when it is switched off."""
    if given is not None:
        return Path(given)
    env = os.environ.get("HARNESS_HISTORY")
    if env == "off":
        return None
    return Path(env) if env else DEFAULT


def run_id(folder: str | Path) -> str:
    """The folder's name and a short hash of its absolute path: stable, readable, unique across machines' folders."""
    root = Path(folder).resolve()
    return f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:6]}"


# SQLite's primary result codes for a file that is not (or no longer) a database: e.g. random bytes, or a store
# truncated half-way. Other codes (busy, locked, disk full) are not the file's fault and stay exceptions.
_UNREADABLE = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_AFTERWARDS = "rebuild it from the run folders with `harness history rebuild RESULTS_ROOT` (it keeps this file aside)"


def exists(path: Path) -> bool:
    """Whether the store has been written yet; a folder in its place is bad input, not an empty history."""
    if path.is_dir():
        raise InputError("is a folder: expected the history's SQLite file, e.g. results/history.sqlite "
                         "(--history PATH or HARNESS_HISTORY)", path)
    return path.is_file()


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """The store, open with its tables, in one transaction (committed at the end, rolled back on an error), and
    closed. A store that is a folder, or a file that is not a readable SQLite history, is one InputError line."""
    exists(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise InputError(f"cannot open the history database ({exc})", path) from None
    try:
        with db:
            db.row_factory = sqlite3.Row
            db.executescript(SCHEMA)
            yield db
    except sqlite3.DatabaseError as exc:
        if (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF not in _UNREADABLE:  # None: raised by Python, not SQLite
            raise
        raise InputError(f"not a readable history database ({exc}): {_AFTERWARDS}", path) from None
    finally:
        db.close()


def index_run(folder: str | Path, path: Path) -> str:
    """Index (or re-index) a run folder; returns its run id."""
    from harness.results.columns import hardware

    manifest, results = RunFolder(folder).read_run()
    rid = run_id(folder)
    env, ray = manifest.environment, manifest.ray or {}
    run = (rid, str(Path(folder).resolve()), manifest.scenario.get("resolved", {}).get("name"), manifest.started_at,
           manifest.finished_at, manifest.status.value, env.get("code", {}).get("git_commit"), env.get("code", {}).get("tree_sha256"),
           manifest.corpus.get("fingerprint"), env.get("platform"), json.dumps(env.get("cpu")), ray.get("nodes"))
    cells = [(rid, r.cell.id, r.cell.detector, r.cell.target, r.cell.backend.backend if r.cell.backend else None,
              r.cell.backend.precision if r.cell.backend else None, json.dumps(r.cell.params, sort_keys=True, default=str),
              r.status.value, hardware(r.tasks.get("score")), r.error or None) for r in results]
    rows = [(rid, f.cell, f.target, f.metric, f.value, f.better, int(f.deterministic), f.noise_pct, f.unit) for f in figures(results)]
    with connect(path) as db:  # one transaction: a reader sees the run whole or not at all
        for table in ("runs", "cells", "metrics"):
            db.execute(f"DELETE FROM {table} WHERE run_id = ?", (rid,))
        db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", run)
        db.executemany("INSERT INTO cells VALUES (?,?,?,?,?,?,?,?,?,?)", cells)
        db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?)", rows)
    return rid


def runs(path: Path, scenario: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    if not exists(path):
        return []
    with connect(path) as db:
        where, args = ("WHERE scenario = ?", (scenario,)) if scenario else ("", ())
        q = (f"SELECT r.*, (SELECT count(*) FROM cells c WHERE c.run_id = r.run_id) AS cells, "
             f"(SELECT count(*) FROM cells c WHERE c.run_id = r.run_id AND c.status = 'ok') AS ok "
             f"FROM runs r {where} ORDER BY started_at DESC LIMIT ?")
        return [dict(row) for row in db.execute(q, (*args, limit))]


def previous_run(path: Path, scenario: str, started_at: str, folder: str | Path) -> dict[str, Any] | None:
    """The latest run of `scenario` in the store that started before `started_at`, other than `folder`, whose folder
    is still there: what a scheduled sweep compares its new run with (`harness compare previous RUN`)."""
    mine = run_id(folder)
    earlier = [r for r in runs(path, scenario, limit=1000)
               if r["run_id"] != mine and (r["started_at"] or "") < started_at and Path(r["path"] or "").is_dir()]
    return earlier[0] if earlier else None  # runs() lists the newest first


def trend(path: Path, metric: str, cell: str | None = None) -> list[dict[str, Any]]:
    """A metric's values over runs, oldest first: run, started_at, code, cell, value, noise."""
    if not exists(path):
        return []
    with connect(path) as db:
        q = ("SELECT r.run_id, r.started_at, r.git_commit, m.cell, m.value, m.noise_pct FROM metrics m "
             "JOIN runs r USING (run_id) WHERE m.metric = ?" + (" AND m.cell = ?" if cell else "") + " ORDER BY r.started_at, m.cell")
        return [dict(row) for row in db.execute(q, (metric, cell) if cell else (metric,))]


def series(path: Path, scenario: str, metrics: tuple[str, ...], patterns: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The scenario's runs' values of `metrics` (and of metrics matching the SQL LIKE `patterns`, e.g. serving
    figures 'p95_ms[% peak]'), oldest run first, each with what judging a change needs (direction, noise,
    determinism, the run's corpus and code): the report's trend of headline figures."""
    if not exists(path):
        return []
    where = " OR ".join(["m.metric IN (%s)" % ",".join("?" * len(metrics))] + ["m.metric LIKE ?"] * len(patterns))
    q = ("SELECT r.run_id, r.started_at, r.git_commit, r.corpus_fingerprint, m.cell, m.metric, m.value, m.better, "
         "m.deterministic, m.noise_pct, m.unit FROM metrics m JOIN runs r USING (run_id) "
         f"WHERE r.scenario = ? AND ({where}) ORDER BY r.started_at, r.run_id, m.cell, m.metric")
    with connect(path) as db:
        return [dict(row) for row in db.execute(q, (scenario, *metrics, *patterns))]


def spread_between_runs(path: Path | None, scenario: str | None, exclude: set[str], minimum: int = 3) -> dict[tuple[str, str], float]:
    """Per (cell, measured metric): how much it varies from run to run in the history (same scenario; the runs in
    `exclude` left out), in percent: 2 x the robust standard deviation (1.4826 x MAD) over the median, from
    `minimum` runs or more. The within-run spread misses what changes between runs (another tenant on the host,
    a slower hour); this is the noise a single run cannot show."""
    if path is None or scenario is None or not exists(path):
        return {}
    import numpy as np

    with connect(path) as db:
        rows = db.execute("SELECT m.run_id, m.cell, m.metric, m.value FROM metrics m JOIN runs r USING (run_id) "
                          "WHERE r.scenario = ? AND m.deterministic = 0", (scenario,)).fetchall()
    values: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row["run_id"] not in exclude:
            values.setdefault((row["cell"], row["metric"]), []).append(row["value"])
    out = {}
    for key, v in values.items():
        if len(v) >= minimum:
            x = np.asarray(v)
            median = float(np.median(x))
            if median:
                out[key] = 100.0 * 2 * 1.4826 * float(np.median(np.abs(x - median))) / abs(median)
    return out


def folder_of(path: Path, ref: str) -> Path:
    """A run folder given as a folder, or as a run id in the history."""
    if Path(ref).is_dir():
        return Path(ref)
    if exists(path):
        with connect(path) as db:
            row = db.execute("SELECT path FROM runs WHERE run_id = ?", (ref,)).fetchone()
        if row is not None:
            return Path(row["path"])
    raise InputError(f"neither a run folder nor a run id in {path}", field=ref)


def rebuild(path: Path, root: str | Path) -> tuple[Path | None, list[str], list[str]]:
    """A fresh store from every run folder under `root` (a folder holding a manifest.json), for a store that is
    corrupt or lost: the run folders are the truth, the store only indexes them. The old file, and SQLite's
    journal beside it (left there, it would be replayed into the new store), are kept aside as
    `<name>.corrupt-<time>` (unreadable) or `<name>.old-<time>`. Returns (where the old store went, the run ids
    indexed, the folders that could not be read, each with why)."""
    from datetime import datetime, timezone

    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder: expected the folder your runs are written under, e.g. results", root)
    folders = sorted({m.parent for m in root.rglob("manifest.json") if not any(p.startswith(".") for p in m.parts)})
    aside = None
    if exists(path):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.{'old' if readable(path) else 'corrupt'}-{stamp}")
        for suffix in ("", "-journal", "-wal", "-shm"):
            if Path(f"{path}{suffix}").exists():
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    indexed, skipped = [], []
    for folder in folders:
        try:
            indexed.append(index_run(folder, path))
        except InputError as exc:
            skipped.append(str(exc))
    return aside, indexed, skipped


def readable(path: Path) -> bool:
    """Whether SQLite finds `path`'s pages sound, opened as immutable: nothing is written to it, and a journal
    beside it is neither replayed nor deleted (it is evidence, moved aside with it)."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
        try:
            return db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False
