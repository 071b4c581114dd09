"""Bad input around a run, through the real CLI: one line on stderr, exit status 2, nothing half-written.

Resuming a folder that is corrupt, or that was run with another scenario or corpus; an --out that cannot be
written; --resume without --out; a corpus that `run` would reject passes `validate` neither; a label timestamp
blamed on the label file; --only narrowing the corpus. None of this starts Ray (the stand-in `ray` of
test_scenario refuses to import).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.plan import plan
from harness.results.folder import RunFolder
from harness.run import new_manifest

from conftest import NAB, REPO, harness, needs_nab, needs_nab_results, needs_netns, one_error_line, snapshot, write_nab

SCENARIO = "name: resumable\ncorpus: {{path: nab}}\ndetectors:\n  - type: random\n    params: {{seed: {seed}}}\n"


@pytest.fixture()
def started(tmp_path: Path) -> tuple[Path, Path]:
    """A scenario and the folder of a run of it that stopped after writing its manifest."""
    write_nab(tmp_path / "nab")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO.format(seed=1))
    out = tmp_path / "run"
    folder = RunFolder(out)
    folder.check_new()
    folder.write_manifest(new_manifest(plan(scenario)))
    return scenario, out


def test_resume_of_a_corrupt_manifest_is_one_line(started, cli_env) -> None:
    scenario, out = started
    (out / "manifest.json").write_text('{"schema_version": 2, "cells": [')
    line = one_error_line(harness(cli_env, "run", scenario, "--resume", "--out", out))
    assert str(out / "manifest.json") in line and "corrupt" in line, line


def test_resume_of_a_foreign_manifest_is_one_line(started, cli_env) -> None:
    scenario, out = started
    (out / "manifest.json").write_text(json.dumps({"status": "complete", "cells": ["random"]}))  # an older harness
    line = one_error_line(harness(cli_env, "run", scenario, "--resume", "--out", out))
    assert "another version of harness" in line, line


@pytest.mark.parametrize("content", ["", "{", "[]", '{"schema_version": 2}'])
def test_resume_with_an_unreadable_cell_result_is_one_line(started, cli_env, content: str) -> None:
    scenario, out = started
    result = out / "cells" / "random" / "result.json"
    result.parent.mkdir(parents=True)
    result.write_text(content)
    before = snapshot(out)
    line = one_error_line(harness(cli_env, "run", scenario, "--resume", "--out", out))
    assert str(result) in line and "unreadable cell result" in line, line
    assert snapshot(out) == before


def test_resume_refuses_a_changed_scenario(started, cli_env) -> None:
    scenario, out = started
    scenario.write_text(SCENARIO.format(seed=2))  # not a grid axis: the cell ids stay the same
    before = snapshot(out)
    line = one_error_line(harness(cli_env, "run", scenario, "--resume", "--out", out))
    assert "the scenario changed at detectors[0].params.seed (was 1, now 2)" in line, line
    assert snapshot(out) == before


def test_resume_refuses_a_changed_corpus(started, cli_env, tmp_path: Path) -> None:
    scenario, out = started
    data = tmp_path / "nab" / "data" / "cat" / "f.csv"
    data.write_text(data.read_text().replace(",9.0", ",9.5"))
    line = one_error_line(harness(cli_env, "run", scenario, "--resume", "--out", out))
    assert "the corpus differs" in line, line
    other = tmp_path / "other"  # the same scenario pointed elsewhere with --corpus
    write_nab(other)
    (other / "data" / "cat" / "f.csv").write_text(data.read_text().replace(",1.5", ",1.6"))
    line = one_error_line(harness(cli_env, "run", scenario, "--resume", "--out", out, "--corpus", other))
    assert "the corpus differs" in line, line


def test_resume_accepts_the_same_corpus_moved(started, cli_env, tmp_path: Path) -> None:
    """Where the corpus lies is not part of the comparison; its contents are. (It then gets as far as Ray.)"""
    scenario, out = started
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "nab", moved)
    proc = harness(cli_env, "run", scenario, "--resume", "--out", out, "--corpus", moved)
    assert "Ray must not be imported here" in proc.stderr, proc.stderr[-2000:]


def test_resume_needs_out(started, cli_env) -> None:
    scenario, _ = started
    results = REPO / "results"
    before = sorted(results.iterdir()) if results.is_dir() else []
    line = one_error_line(harness(cli_env, "run", scenario, "--resume"))
    assert "--resume needs --out" in line, line
    assert (sorted(results.iterdir()) if results.is_dir() else []) == before  # no folder invented


def test_out_under_a_file_is_one_line(started, cli_env, tmp_path: Path) -> None:
    scenario, _ = started
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = one_error_line(harness(cli_env, "run", scenario, "--out", blocker / "run"))
    assert str(blocker / "run") in line and "cannot write" in line, line


@needs_netns
def test_out_on_a_read_only_file_system_is_one_line(started, cli_env, tmp_path: Path) -> None:
    """A read-only mount (root ignores permission bits, so a real read-only file system), in a private mount
    namespace that disappears with the command."""
    scenario, _ = started
    mnt = tmp_path / "ro"
    mnt.mkdir()
    script = f'mount -t tmpfs -o ro tmpfs "{mnt}" && exec "$0" "$@"'
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, *harness_args(scenario, "--out", mnt / "run")],
        env=cli_env, capture_output=True, text=True, timeout=60,
    )
    line = one_error_line(proc)
    assert str(mnt / "run") in line and "cannot write" in line and "Read-only" in line, line


def harness_args(*args) -> list[str]:
    import sys

    return [sys.executable, "-m", "harness", "run", *map(str, args)]


def test_validate_reads_the_data_that_run_reads(tmp_path: Path, cli_env) -> None:
    write_nab(tmp_path / "nab")
    data = tmp_path / "nab" / "data" / "cat" / "f.csv"
    data.write_text(data.read_text().replace(",9.0", ",inf"))
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: v\ndetectors:\n  - type: random\n")
    validated = one_error_line(harness(cli_env, "validate", scenario, "--corpus", tmp_path / "nab"))
    ran = one_error_line(harness(cli_env, "run", scenario, "--corpus", tmp_path / "nab", "--out", tmp_path / "o"))
    assert validated == ran and str(data) in ran and "finite value" in ran, ran
    assert not (tmp_path / "o").exists()


def test_a_bad_label_timestamp_is_blamed_on_the_label_file(tmp_path: Path, cli_env) -> None:
    root = write_nab(tmp_path / "nab")
    labels = root / "labels" / "combined_windows.json"
    for bad, why in (("2026-13-45 00:10:00", "is not a timestamp"), ("2026-01-02 00:10:00", "does not occur in data/cat/f.csv")):
        labels.write_text(json.dumps({"cat/f.csv": [[bad, "2026-01-01 00:15:00.000000"]]}))
        scenario = tmp_path / "s.yaml"
        scenario.write_text("name: v\ndetectors:\n  - type: random\n")
        line = one_error_line(harness(cli_env, "validate", scenario, "--corpus", root))
        assert f"{labels}: cat/f.csv: window timestamp '{bad}' {why}" in line, line


@needs_nab
def test_only_narrows_the_corpus_and_names_what_it_lacks(cli_env) -> None:
    proc = harness(cli_env, "validate", "scenarios/nab-baselines.yaml", "--corpus", NAB, "--only", "realTraffic,realTweets/Twitter_volume_AAPL.csv")
    assert proc.returncode == 0, proc.stderr
    assert "only realTraffic, realTweets/Twitter_volume_AAPL.csv: 8 files" in proc.stdout, proc.stdout
    line = one_error_line(harness(cli_env, "validate", "scenarios/nab-baselines.yaml", "--corpus", NAB, "--only", "realTrafic"))
    assert "--only" in line and "'realTrafic' is neither a category nor a labelled file" in line and "realTraffic" in line, line


# --- harness nab score ----------------------------------------------------------------------------------------


@needs_nab_results("null")
def test_nab_score_refuses_an_empty_profiles_file(tmp_path: Path, cli_env) -> None:
    corpus = tmp_path / "nab"
    corpus.mkdir()
    for part in ("data", "labels"):
        (corpus / part).symlink_to(NAB / part)
    (corpus / "config").mkdir()
    (corpus / "config" / "profiles.json").write_text("{}")
    line = one_error_line(harness(cli_env, "nab", "score", NAB / "results" / "null", "--corpus", corpus, "--optimize"))
    assert str(corpus / "config" / "profiles.json") in line and "at least one profile" in line, line


@needs_nab_results("numenta")
def test_nab_score_json_keeps_its_contract_and_adds_detection(cli_env) -> None:
    proc = harness(cli_env, "nab", "score", NAB / "results" / "numenta", "--corpus", NAB, "--optimize", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["detector"] == "numenta" and set(out["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    at = out["detection"]["standard"]
    assert at["f1"] == pytest.approx(0.5275, abs=1e-4) and at["precision"] == pytest.approx(0.387, abs=1e-3)
    assert at["recall"] == pytest.approx(0.828, abs=1e-3)
    assert at["latency_mean_s"] > 0 and at["latency_mean_rows"] > 0 and at["fp_events"] > 0  # timestamps are read
    for key in ("range_precision", "range_recall", "range_f1"):
        assert 0 < at[key] < 1, key
    assert set(out["detection"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate", "best_f1"}


@needs_nab_results("numenta")
def test_nab_score_prints_thresholds_with_every_digit(cli_env) -> None:
    proc = harness(cli_env, "nab", "score", NAB / "results" / "numenta", "--corpus", NAB, "--optimize")
    assert proc.returncode == 0, proc.stderr
    assert "0.543099145074" in proc.stdout, proc.stdout  # not 0.5431


def test_an_address_nothing_answers_on_is_one_line_before_anything_is_written(started, cli_env, tmp_path: Path) -> None:
    scenario, _ = started
    out = tmp_path / "never"
    line = one_error_line(harness(cli_env, "run", scenario, "--out", out, "--address", "127.0.0.1:1"))
    assert "--address: no Ray cluster answers at 127.0.0.1:1" in line, line
    assert not out.exists()
