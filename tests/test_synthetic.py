"""The embedded synthetic corpus: deterministic, in NAB's layout, with NAB-sized windows on real anomalies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.corpus import synthetic
from harness.corpus.layout import load_corpus
from harness.errors import InputError

N = 4032


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_corpus(tmp_path_factory.mktemp("synth") / "corpus", seed=7, n_rows=N)


def _points(root: Path) -> dict[str, list[int]]:
    """Anomaly rows from combined_labels.json (row = minutes since start / 5)."""
    labels = json.loads((root / "labels" / "combined_labels.json").read_text())
    start = np.datetime64("2026-01-01T00:00:00", "s")
    return {
        name: [int((np.datetime64(t.replace(" ", "T"), "s") - start) // np.timedelta64(300, "s")) for t in stamps]
        for name, stamps in labels.items()
    }


def _rolling_median(x: np.ndarray, half: int = 5) -> np.ndarray:
    padded = np.pad(x, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def test_generate_is_deterministic_per_seed() -> None:
    a, b = synthetic.generate(7, N), synthetic.generate(7, N)
    assert a == b
    other = synthetic.generate(8, N)
    assert other.keys() == a.keys()
    assert other["data/synthWithAnomaly/spike_single.csv"] != a["data/synthWithAnomaly/spike_single.csv"]


def test_layout_loads_with_expected_files_and_rows(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    names = [f.name for f in corpus.files]
    assert len(names) == 13
    assert sum(n.startswith("synthNoAnomaly/") for n in names) == 3
    assert sum(n.startswith("synthWithAnomaly/") for n in names) == 10
    for f in corpus.files:
        assert f.n_rows == N and len(f.values) == N
        assert f.timestamps[0] == np.datetime64("2026-01-01T00:00:00")
        assert np.all(np.diff(f.timestamps) == np.timedelta64(300, "s"))
    assert {p.relative_to(corpus_dir).as_posix() for p in corpus_dir.rglob("*") if p.is_file()} == set(
        synthetic.generate(7, N)
    )


def test_windows_are_nab_sized_centred_and_after_probation(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    points = _points(corpus_dir)
    counts = set()
    for f in corpus.files:
        rows = points[f.name]
        assert len(f.windows) == len(rows)
        if f.category == "synthNoAnomaly":
            assert rows == []
            continue
        counts.add(len(rows))
        length = int(0.1 * N / len(rows))
        for (lo, hi), a in zip(f.windows, rows):
            assert abs((hi - lo + 1) - length) <= 1
            assert abs((lo + hi) / 2 - a) <= 1
            assert lo >= 0.15 * N and a >= 0.15 * N
        if len(rows) > 1:
            assert np.all(f.windows[1:, 0] > f.windows[:-1, 1])
    assert counts == {1, 2, 3}


def test_spike_is_the_largest_deviation(corpus_dir: Path) -> None:
    f = load_corpus(corpus_dir).file("synthWithAnomaly/spike_single.csv")
    (spike,) = _points(corpus_dir)[f.name]
    deviation = np.abs(f.values - _rolling_median(f.values))
    assert int(np.argmax(deviation)) == spike
    rest = np.delete(deviation, spike)
    assert deviation[spike] > 2 * rest.max()


def test_level_shift_flatline_and_noise_burst_are_real(corpus_dir: Path) -> None:
    corpus = load_corpus(corpus_dir)
    points = _points(corpus_dir)

    x = corpus.file("synthWithAnomaly/level_shift.csv").values
    (a,) = points["synthWithAnomaly/level_shift.csv"]
    day = 288  # compare whole days so the daily cycle cancels
    assert abs(x[a : a + day].mean() - x[a - day : a].mean()) > 5

    x = corpus.file("synthWithAnomaly/flatline.csv").values
    (a,) = points["synthWithAnomaly/flatline.csv"]
    steps = np.abs(np.diff(x))
    assert np.all(steps[a : a + 100] == 0)
    assert np.count_nonzero(steps == 0) < 0.1 * N  # only the flat stretch is flat

    x = corpus.file("synthWithAnomaly/noise_burst.csv").values
    (a,) = points["synthWithAnomaly/noise_burst.csv"]
    steps = np.diff(x)
    assert steps[a : a + 100].std() > 3 * steps[: a - 10].std()


def test_no_anomaly_files_have_empty_windows(corpus_dir: Path) -> None:
    windows = json.loads((corpus_dir / "labels" / "combined_windows.json").read_text())
    empty = sorted(name for name, w in windows.items() if w == [])
    assert empty == [
        "synthNoAnomaly/periodic_noise.csv",
        "synthNoAnomaly/pure_noise.csv",
        "synthNoAnomaly/trend_noise.csv",
    ]


def test_write_corpus_refuses_non_empty_dest(tmp_path: Path) -> None:
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not empty"):
        synthetic.write_corpus(dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary folder left behind


def test_write_corpus_fills_an_empty_dest(tmp_path: Path) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    assert synthetic.write_corpus(dest, n_rows=600) == dest
    assert len(load_corpus(dest).files) == 13
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_cached_corpus_root_writes_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    calls = []
    real = synthetic.write_corpus

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "write_corpus", counting)
    first = synthetic.cached_corpus_root(seed=3, n_rows=600)
    second = synthetic.cached_corpus_root(seed=3, n_rows=600)
    assert first == second
    assert first.parent == tmp_path and first.name.startswith("synthetic-3-600-")
    assert len(calls) == 1
    assert len(load_corpus(first).files) == 13


def test_cached_corpus_root_tolerates_losing_the_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rival fills the final folder after our emptiness check but before our rename: we use its copy."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    final = tmp_path / f"synthetic-4-600-{synthetic.generator_hash()}"
    real_generate = synthetic.generate

    def rival_finishes_meanwhile(seed: int, n_rows: int) -> dict[str, bytes]:
        files = real_generate(seed, n_rows)
        monkeypatch.setattr(synthetic, "generate", real_generate)
        synthetic.write_corpus(final, seed, n_rows)
        (final / "rival").write_text("")  # mark the winner's copy
        return files

    monkeypatch.setattr(synthetic, "generate", rival_finishes_meanwhile)
    root = synthetic.cached_corpus_root(seed=4, n_rows=600)
    assert root == final and (root / "rival").exists()
    assert len(load_corpus(root).files) == 13
    assert [p.name for p in tmp_path.iterdir()] == [final.name]  # the loser's copy was discarded


def test_write_corpus_loses_rename_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "corpus"
    real_generate = synthetic.generate

    def someone_writes_meanwhile(seed: int, n_rows: int) -> dict[str, bytes]:
        dest.mkdir()
        (dest / "theirs.txt").write_text("x")
        return real_generate(seed, n_rows)

    monkeypatch.setattr(synthetic, "generate", someone_writes_meanwhile)
    with pytest.raises(InputError, match="already exists and is not empty"):
        synthetic.write_corpus(dest, n_rows=600)
    assert [p.name for p in dest.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]
