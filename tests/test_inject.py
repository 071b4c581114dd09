"""Synthetic anomalies on any corpus (harness.corpus.inject): planted where they say, with windows and kinds a
run can read back, the rest of every file untouched, and recall reported per kind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.corpus.inject import KINDS, LABELLED, inject, plant, recall_by_kind, write_injected
from harness.corpus.layout import load_corpus
from harness.errors import InputError
from harness.scoring.nab import probation_rows

from conftest import NAB, harness, one_error_line, require


@pytest.fixture(scope="module")
def planted(synthetic_root, tmp_path_factory):
    source = load_corpus(synthetic_root)
    files, counts = inject(source, per_file=2, seed=3)
    dest = write_injected(tmp_path_factory.mktemp("inj") / "corpus", files)
    return source, load_corpus(dest), counts


def test_every_kind_is_planted_with_a_window_and_its_kind(planted) -> None:
    source, corpus, counts = planted
    assert set(counts) == set(KINDS) and sum(counts.values()) == 2 * len(source.files)
    assert max(counts.values()) - min(counts.values()) <= 1  # dealt round-robin
    kinds = [k for f in corpus.files for k in f.anomaly_kinds]
    assert sorted(set(kinds)) == sorted(set(KINDS) | {"frequency_change"})  # the embedded corpus names its own kinds
    for before, after in zip(source.files, corpus.files):
        assert after.name == before.name and after.n_rows == before.n_rows
        assert len(after.windows) == len(before.windows) + 2
        assert len(after.anomaly_kinds) == len(after.windows)
        own = {tuple(w): k for w, k in zip(before.windows.tolist(), before.anomaly_kinds)}
        new = [(tuple(w), k) for w, k in zip(after.windows.tolist(), after.anomaly_kinds) if tuple(w) not in own]
        assert len(new) == 2 and all(lo >= probation_rows(after.n_rows) for (lo, _), _ in new)
        # before the first planted anomaly nothing changed (a shift or a drift persists after it)
        first = min(lo for (lo, _), _ in new)
        assert np.allclose(after.values[:first], before.values[:first])
        changed = np.flatnonzero(~np.isclose(after.values, before.values))
        assert len(changed) and changed[0] >= first


def test_the_same_seed_gives_the_same_bytes(synthetic_root) -> None:
    source = load_corpus(synthetic_root)
    assert inject(source, seed=1)[0] == inject(source, seed=1)[0]
    assert inject(source, seed=1)[0] != inject(source, seed=2)[0]


@pytest.mark.parametrize("kind", ["spike", "noise_burst", "flatline"])
def test_a_passing_anomaly_touches_only_its_rows(kind) -> None:
    x = np.sin(np.arange(500) / 10.0) + np.random.default_rng(0).normal(0, 0.1, 500)
    y = x.copy()
    plant(y, kind, 200, 20, np.random.default_rng(1))
    changed = np.flatnonzero(x != y)
    assert len(changed) and changed.min() >= 200 and changed.max() < 220


def test_recall_by_kind_counts_windows_hit_after_probation() -> None:
    windows = [np.array([[10, 20], [50, 60]]), np.array([[0, 5], [30, 40]])]
    kinds = [["spike", "drift"], ["spike", "spike"]]
    alerts = [np.zeros(100, bool), np.zeros(100, bool)]
    alerts[0][15] = alerts[1][3] = alerts[1][35] = True
    got = recall_by_kind(windows, kinds, alerts, [8, 8])  # the second file's first window ends in probation
    assert got == {"drift": (0, 1), "spike": (2, 2)}


def test_bad_requests_are_refused(synthetic_root, tmp_path) -> None:
    source = load_corpus(synthetic_root)
    with pytest.raises(InputError, match="unknown anomaly kind 'wobble'"):
        inject(source, anomaly_kinds=("spike", "wobble"))
    with pytest.raises(InputError, match="at least 1 anomaly per file"):
        inject(source, per_file=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(InputError, match="not empty"):
        write_injected(tmp_path / "full", inject(source)[0])


def test_cli_plants_into_nab_and_refuses_bad_input(cli_env, tmp_path) -> None:
    require(NAB.is_dir(), f"NAB is not at {NAB}")
    proc = harness(cli_env, "corpus", "inject", NAB, tmp_path / "nab-planted", "--kinds", "spike,flatline", "--seed", "4")
    assert proc.returncode == 0, proc.stderr
    assert "planted 29 spike, 29 flatline" in proc.stdout
    corpus = load_corpus(tmp_path / "nab-planted")
    original = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    assert corpus.label_windows == sum(map(len, original.values())) + 58
    assert sum(k == LABELLED for f in corpus.files for k in f.anomaly_kinds) == sum(map(len, original.values()))
    assert (tmp_path / "nab-planted" / "config" / "profiles.json").read_bytes() == (NAB / "config" / "profiles.json").read_bytes()
    line = one_error_line(harness(cli_env, "corpus", "inject", NAB, tmp_path / "other", "--kinds", "wobble"))
    assert "unknown anomaly kind 'wobble'" in line and not (tmp_path / "other").exists()
    line = one_error_line(harness(cli_env, "corpus", "inject", tmp_path / "nowhere", tmp_path / "other"))
    assert "does not exist" in line
