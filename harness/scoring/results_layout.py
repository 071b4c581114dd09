"""NAB's results layout: `<detector>/<category>/<detector>_<file>.csv` with an `anomaly_score` column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.corpus.csvcolumns import float_column, line_count
from harness.corpus.layout import Corpus, SeriesFile
from harness.errors import InputError


def results_path(results_dir: Path, detector: str, f: SeriesFile) -> Path:
    return results_dir / f.category / f"{detector}_{f.stem}"


def read_results_dir(results_dir: str | Path, corpus: Corpus) -> tuple[str, list[np.ndarray]]:
    """One detector's per-row scores for every corpus file; the detector is the folder's name."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InputError("expected a detector's results folder in NAB's layout (<name>/<category>/<name>_<file>.csv)", results_dir)
    detector = results_dir.resolve().name
    out = []
    for f in corpus.files:
        path = results_path(results_dir, detector, f)
        if not path.is_file():
            raise InputError(f"results file missing for {f.name}", path)
        raw = path.read_bytes()
        if line_count(raw) != f.n_rows:
            raise InputError(f"{line_count(raw)} rows, but data/{f.name} has {f.n_rows}", path)
        scores = float_column(raw, "anomaly_score", path)
        bad = np.flatnonzero(~np.isfinite(scores))
        if len(bad):
            raise InputError(f"row {int(bad[0]) + 1}, column 'anomaly_score': expected a finite number, got {scores[bad[0]]}", path)
        out.append(scores)
    return detector, out


def results_csv(f: SeriesFile, scores: np.ndarray) -> bytes:
    """A results file as NAB writes it (timestamp, value, anomaly_score), so NAB's own scorer can read it."""
    assert f.timestamps is not None and f.values is not None
    stamps = np.datetime_as_string(f.timestamps, unit="s")
    lines = ["timestamp,value,anomaly_score"]
    lines += [f"{t.replace('T', ' ')},{v!r},{s!r}" for t, v, s in zip(stamps, f.values.tolist(), scores.tolist())]
    return ("\n".join(lines) + "\n").encode()
