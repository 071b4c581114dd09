"""The history store and `harness compare`, on run folders built from typed results (no Ray): indexing is
idempotent; identical runs compare clean (exit 0); a planted 20% throughput drop and a changed NAB score are
regressions (exit 1); a drop inside the run's measured spread is noise; a figure timed too briefly or in too
few rounds is too noisy to judge; a move its rounds do not show (Mann-Whitney) is noise; an empty run or
another scenario is exit 2; a trend is listed and plotted; each cell exports to MLflow as a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.results.schema import Manifest

from conftest import harness, one_error_line
from test_report import result


ROUNDS = (0.98, 0.99, 1.0, 1.01, 1.02)  # each timing round's median against the rounds' median


def write_run(root: Path, nab: float = 50.0, eps: float = 1000.0, spread_pct: float = 0.0, started: str = "2026-11-01T00:00:00+00:00",
              fingerprint: str = "corpus-1", tree: str = "f00", threshold: float = 0.9, cell: str = "ae.ort-fp32",
              rounds: tuple[float, ...] = ROUNDS, timed_s: float = 2.0, seconds: float = 1.0, scenario: str = "hist",
              cells: bool = True, tail: float = 1.0) -> Path:
    """A run of two cells: `cell`, timed (`rounds` and `timed_s` per batch size), and `wg`, scored in `seconds`."""
    cells_ = [result(cell, "onnxruntime", "fp32", nab, eps, threshold=threshold), result("wg", None, "fp32", 40.0, 0.0, detector="wg")]
    timing = cells_[0].tasks["timing"].result
    timing.batchN.spread_pct = spread_pct
    for lat in (timing.batch1, timing.batchN):
        lat.rounds_p50_ms, lat.duration_s = [lat.p50_ms * f for f in rounds], timed_s
        lat.p95_ms, lat.p99_ms = lat.p95_ms * tail, lat.p99_ms * tail
    cells_[1].tasks["score"].seconds = seconds
    cells = cells_ if cells else []
    manifest = Manifest(scenario={"resolved": {"name": scenario}}, corpus={"fingerprint": fingerprint}, cells=[c.cell.id for c in cells],
                        command=["harness", "run"], environment={"code": {"git_commit": "abc123", "tree_sha256": tree}},
                        started_at=started, status="complete")
    (root / "cells").mkdir(parents=True)
    (root / "manifest.json").write_text(manifest.model_dump_json())
    for c in cells:
        (root / "cells" / c.cell.id).mkdir()
        (root / "cells" / c.cell.id / "result.json").write_text(c.model_dump_json())
    return root


@pytest.fixture
def env(cli_env, tmp_path) -> dict[str, str]:
    return {**cli_env, "HARNESS_HISTORY": str(tmp_path / "history.sqlite")}


def past(store: Path, root: Path, runs: int = 3, **kw) -> Path:
    """`runs` earlier runs of the scenario indexed into `store` (in-process): the run-to-run spread that measured
    figures are judged by (none here: identical runs)."""
    from harness.history.store import index_run

    for k in range(runs):
        index_run(write_run(root / f"past-{k}", started=f"2026-10-0{k + 1}T00:00:00+00:00", **kw), store)
    return store


def test_index_list_and_trend(env, tmp_path) -> None:
    a = write_run(tmp_path / "run-a", eps=1000.0, started="2026-11-01T00:00:00+00:00")
    b = write_run(tmp_path / "run-b", eps=1100.0, started="2026-11-02T00:00:00+00:00")
    for run in (a, b, a):  # a twice: re-indexing replaces, never duplicates
        assert harness(env, "history", "index", run).returncode == 0
    listed = harness(env, "history", "list")
    assert listed.returncode == 0 and listed.stdout.count("run-a-") == 1 and listed.stdout.count("run-b-") == 1, listed.stdout
    shown = harness(env, "history", "show", "throughput_eps", "--cell", "ae.ort-fp32", "--plot", tmp_path / "trend.png")
    assert shown.returncode == 0, shown.stderr
    values = [float(line.split()[3]) for line in shown.stdout.splitlines() if "ae.ort-fp32" in line]
    assert values == [1000.0, 1100.0]  # oldest first
    assert (tmp_path / "trend.png").read_bytes()[:4] == b"\x89PNG"
    import sqlite3

    db = sqlite3.connect(tmp_path / "history.sqlite")
    assert db.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    stored = {m for (m,) in db.execute("SELECT metric FROM metrics WHERE cell = 'ae.ort-fp32'")}
    assert {"nab_standard", "throughput_eps", "throughput_spread_pct", "batch", "threshold"} <= stored  # every numeric column
    assert db.execute("SELECT backend, precision FROM cells WHERE cell = 'ae.ort-fp32'").fetchall() == [("onnxruntime", "fp32")] * 2


def compare(env, a: Path, b: Path, *extra: str) -> tuple[int, dict]:
    proc = harness(env, "compare", a, b, "--json", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def verdict(report: dict, cell: str, metric: str) -> str:
    return next(v["verdict"] for v in report["verdicts"] if v["cell"] == cell and v["metric"] == metric)


def test_identical_runs_compare_clean(env, tmp_path) -> None:
    code, report = compare(env, write_run(tmp_path / "a"), write_run(tmp_path / "b"))
    assert code == 0 and report["regressions"] == 0 and report["failures"] == 0
    assert {v["verdict"] for v in report["verdicts"]} == {"same"}
    assert not any(v["metric"] == "throughput_spread_pct" for v in report["verdicts"])  # a noise figure: not judged


def test_a_planted_throughput_drop_and_a_changed_nab_score_are_regressions(env, tmp_path) -> None:
    past(Path(env["HARNESS_HISTORY"]), tmp_path)
    base = write_run(tmp_path / "a")
    code, report = compare(env, base, write_run(tmp_path / "slow", eps=800.0))  # 20% fewer events/s
    assert code == 1 and verdict(report, "ae.ort-fp32", "throughput_eps") == "regressed"
    assert verdict(report, "ae.ort-fp32", "nab_standard") == "same"
    code, report = compare(env, base, tmp_path / "slow", "--skip", "throughput*", "--skip", "latency_*")
    assert code == 0 and not any(v["metric"].startswith("throughput") for v in report["verdicts"])
    code, report = compare(env, base, write_run(tmp_path / "worse", nab=49.9))  # the same corpus, another score
    assert code == 1 and verdict(report, "ae.ort-fp32", "nab_standard") == "regressed"
    text = harness(env, "compare", base, tmp_path / "worse")
    assert text.returncode == 1 and "**regressed**" in text.stdout and "1 regression" not in text.stdout.splitlines()[0]


def test_a_rebuilt_cell_whose_id_changed_is_judged_against_the_build_it_replaces(env, tmp_path) -> None:
    base, rebuilt = write_run(tmp_path / "a"), write_run(tmp_path / "b", nab=40.0, cell="ae.ort-fp32.pruned")
    code, report = compare(env, base, rebuilt)  # by id alone: one cell missing, one new, the loss never seen
    assert code == 0 and verdict(report, "ae.ort-fp32", "nab_standard") == "missing"
    code, report = compare(env, base, rebuilt, "--match", "ae.ort-fp32=ae.ort-fp32.pruned")
    assert code == 1 and verdict(report, "ae.ort-fp32.pruned", "nab_standard") == "regressed"
    assert not any(v["cell"] == "ae.ort-fp32" for v in report["verdicts"])
    assert "run A has no cell 'nope'" in one_error_line(harness(env, "compare", base, rebuilt, "--match", "nope=ae.ort-fp32.pruned"))
    assert "expected A_CELL=B_CELL" in one_error_line(harness(env, "compare", base, rebuilt, "--match", "ae.ort-fp32"))


def test_a_deterministic_figure_that_moves_under_the_same_code_and_corpus_fails(env, tmp_path) -> None:
    base = write_run(tmp_path / "a")
    code, report = compare(env, base, write_run(tmp_path / "better", nab=50.1))  # same code, same corpus: not deterministic
    assert code == 1 and verdict(report, "ae.ort-fp32", "nab_standard") == "changed" and report["failures"] > 0
    code, report = compare(env, base, write_run(tmp_path / "new-code", nab=50.1, tree="f01"))  # other code: a real gain
    assert code == 0 and verdict(report, "ae.ort-fp32", "nab_standard") == "improved"
    code, report = compare(env, base, write_run(tmp_path / "threshold", threshold=0.8))  # directionless, same inputs
    assert code == 1 and verdict(report, "ae.ort-fp32", "threshold") == "changed"
    code, report = compare(env, base, write_run(tmp_path / "threshold-new-code", threshold=0.8, tree="f01"))
    assert code == 0 and verdict(report, "ae.ort-fp32", "threshold") == "changed"


def test_a_drop_within_the_measured_spread_is_noise_and_other_inputs_are_not_judged(env, tmp_path) -> None:
    past(Path(env["HARNESS_HISTORY"]), tmp_path)
    code, report = compare(env, write_run(tmp_path / "a", spread_pct=30.0), write_run(tmp_path / "b", eps=800.0, spread_pct=30.0))
    assert code == 0 and verdict(report, "ae.ort-fp32", "throughput_eps") == "noise"
    code, report = compare(env, write_run(tmp_path / "c"), write_run(tmp_path / "d", nab=30.0, fingerprint="corpus-2"))
    assert code == 0 and verdict(report, "ae.ort-fp32", "nab_standard") == "changed inputs"
    code, report = compare(env, write_run(tmp_path / "e"), write_run(tmp_path / "f", eps=1300.0))
    assert code == 0 and verdict(report, "ae.ort-fp32", "throughput_eps") == "improved"


def judged(a: Path, b: Path, history: Path | None = None) -> dict[tuple[str, str], object]:
    """`compare` in-process (no CLI start: these tests are about the verdicts): (cell, metric) -> Verdict."""
    from harness.history.compare import compare as compare_runs

    return {(v.cell, v.metric): v for v in compare_runs(a, b, history=history).verdicts}


def test_a_figure_timed_too_briefly_is_too_noisy_to_judge_never_a_regression(tmp_path) -> None:
    """0.4 s of timing, 2 rounds, a 0.1-second cell: whatever they did, `too noisy`, saying what would do."""
    base = write_run(tmp_path / "a", timed_s=0.4, seconds=0.1)
    v = judged(base, write_run(tmp_path / "b", eps=700.0, timed_s=0.4, seconds=0.15))  # 30% slower, 50% longer
    for metric in ("throughput_eps", "latency_bN_p50_ms", "latency_bN_p99_ms"):
        assert v[("ae.ort-fp32", metric)].verdict == "too noisy" and not v[("ae.ort-fp32", metric)].fails
        assert v[("ae.ort-fp32", metric)].note == "measured 0.4 s; judgeable from 0.5 s at a 10% threshold"
    assert v[("wg", "seconds")].verdict == "too noisy" and v[("wg", "seconds")].note == "measured 0.1 s; judgeable from 0.5 s at a 10% threshold"
    v = judged(write_run(tmp_path / "c", rounds=(1.0, 1.0)), write_run(tmp_path / "d", eps=700.0, rounds=(1.0, 1.0)))
    assert v[("ae.ort-fp32", "throughput_eps")].verdict == "too noisy"
    assert v[("ae.ort-fp32", "throughput_eps")].note == "2 timing rounds or seconds of load; judgeable from 5 (timing.rounds, load.duration_s)"
    assert v[("ae.ort-fp32", "nab_standard")].verdict == "same"  # deterministic figures are judged whatever the timing
    v = judged(write_run(tmp_path / "g"), write_run(tmp_path / "h", eps=700.0))  # timed long enough, but no history
    assert v[("ae.ort-fp32", "throughput_eps")].verdict == "too noisy"
    assert v[("ae.ort-fp32", "throughput_eps")].note.startswith("no run-to-run spread to judge it by: judgeable once the history holds 3 runs")
    v = judged(write_run(tmp_path / "e", seconds=5.0), write_run(tmp_path / "f", seconds=9.0))  # long, but one wall time
    assert v[("wg", "seconds")].verdict == "too noisy" and v[("wg", "seconds")].note.startswith("one wall time: not judged")


def test_a_move_past_the_threshold_that_the_rounds_do_not_show_is_noise(tmp_path) -> None:
    """15% slower on the medians, but the rounds interleave (a Mann-Whitney p far above 0.01): noise. The same
    move with every round slower is a regression, with its p-value; a tail that tripled while the rounds'
    medians stayed put is noise (on a shared machine, the neighbours)."""
    wide = (0.7, 0.9, 1.0, 1.1, 1.3)
    store = past(tmp_path / "history.sqlite", tmp_path)
    v = judged(write_run(tmp_path / "a", rounds=wide), write_run(tmp_path / "b", eps=870.0, rounds=wide[::-1]), store)
    verdict_ = v[("ae.ort-fp32", "throughput_eps")]
    assert verdict_.verdict == "noise" and verdict_.note.startswith("samples not separated (Mann-Whitney p=") and not verdict_.fails
    v = judged(write_run(tmp_path / "c"), write_run(tmp_path / "d", eps=870.0), store)
    assert v[("ae.ort-fp32", "throughput_eps")].verdict == "regressed" and v[("ae.ort-fp32", "throughput_eps")].note == "samples' median -13.0%, Mann-Whitney p=0.00397"
    assert v[("ae.ort-fp32", "latency_bN_p50_ms")].verdict == "regressed"
    v = judged(write_run(tmp_path / "e"), write_run(tmp_path / "f", tail=3.0), store)  # the tail tripled, the rounds' medians did not move
    assert v[("ae.ort-fp32", "latency_bN_p99_ms")].verdict == "noise" and v[("ae.ort-fp32", "latency_bN_p99_ms")].note == "its samples' median moved +0.0%"


def test_the_exact_mann_whitney_p_value_agrees_with_scipy() -> None:
    import random

    from scipy.stats import mannwhitneyu

    from harness.history.compare import MIN_ROUNDS, mann_whitney_p

    rng = random.Random(3)
    for n, m in ((5, 5), (3, 7), (6, 4), (2, 2)):
        a, b = [rng.random() for _ in range(n)], [rng.random() + 0.3 for _ in range(m)]
        for larger in (True, False):
            want = mannwhitneyu(b, a, alternative="greater" if larger else "less", method="exact").pvalue
            assert mann_whitney_p(a, b, larger) == pytest.approx(want)
    assert MIN_ROUNDS == 5  # the fewest rounds a side at which 0.01 can be reached: 1 / C(10, 5) = 0.004


def test_an_empty_run_or_another_scenario_is_exit_2_unless_allowed(env, tmp_path) -> None:
    base = write_run(tmp_path / "a")
    empty = write_run(tmp_path / "empty", cells=False)
    assert one_error_line(harness(env, "compare", base, empty)).endswith(f"{empty}: the run has no finished cell to compare (an empty, failed or unfinished run)")
    failed = write_run(tmp_path / "failed")
    for path in (failed / "cells").glob("*/result.json"):  # every cell failed: all `missing`, which used to pass
        path.write_text(result(path.parent.name, None, "fp32", 0.0, 0.0, status="failed").model_dump_json())
    assert "the run has no finished cell to compare" in one_error_line(harness(env, "compare", base, failed))
    other = write_run(tmp_path / "other", scenario="baselines")
    line = one_error_line(harness(env, "compare", base, other))
    assert line.endswith("run A is of scenario 'hist', run B of 'baselines': not comparable (--allow-different to compare them anyway)")
    code, report = compare(env, base, other, "--allow-different")
    assert code == 0 and report["failures"] == 0


@pytest.mark.parametrize("args, expect", [
    (("compare", "nowhere", "nowhere-else"), "neither a run folder nor a run id"),
    (("history", "show", "no_such_metric"), "no values of 'no_such_metric'"),
    (("history", "index", "."), "not a run folder"),
])
def test_bad_input_is_one_line_exit_2(env, args, expect) -> None:
    assert expect in one_error_line(harness(env, *args))


def unreadable_stores(env: dict[str, str], tmp_path: Path) -> dict[str, Path]:
    """A store of random bytes, a real store cut half-way (a half-written file), and a folder in a store's place."""
    import random

    noise = tmp_path / "noise.sqlite"
    noise.write_bytes(random.Random(0).randbytes(8192))
    whole = tmp_path / "whole.sqlite"
    assert harness({**env, "HARNESS_HISTORY": str(whole)}, "history", "index", write_run(tmp_path / "indexed")).returncode == 0
    half = tmp_path / "half.sqlite"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    return {"noise": noise, "half": half, "folder": folder}


COMMANDS = [("history", "list"), ("history", "show", "nab_standard"), ("history", "index", "{run}"),
            ("compare", "{run}", "{run}"), ("compare", "{run}", "no-such-run-id")]


@pytest.mark.parametrize("store, expect", [("noise", "not a readable history database (file is not a database)"),
                                           ("half", "not a readable history database (database disk image is malformed)"),
                                           ("folder", "is a folder: expected the history's SQLite file")])
def test_an_unreadable_store_is_one_line_naming_it_and_is_left_as_it_was(cli_env, tmp_path, store, expect) -> None:
    path = unreadable_stores(cli_env, tmp_path)[store]
    run = write_run(tmp_path / "run")
    before = path.read_bytes() if path.is_file() else None
    for n, command in enumerate(COMMANDS):
        args = [a.format(run=run) for a in command]
        # the store named by HARNESS_HISTORY, or by --history
        env, given = ({**cli_env, "HARNESS_HISTORY": str(path)}, ()) if n % 2 else (cli_env, ("--history", str(path)))
        line = one_error_line(harness(env, *args, *given))
        assert line.startswith(f"harness: error: {path}: {expect}"), (args, line)
        if store != "folder":
            assert line.endswith("rebuild it from the run folders with `harness history rebuild RESULTS_ROOT` (it keeps this file aside)")
        assert (path.read_bytes() if path.is_file() else None) == before
    assert path.is_dir() == (store == "folder")


def test_a_run_only_warns_when_its_history_is_unreadable(cli_env, tmp_path, monkeypatch, capsys) -> None:
    """`harness run` indexes itself last: an unreadable store costs one warning line, never the run."""
    from harness.run import index_in_history

    run = write_run(tmp_path / "run")
    for store in unreadable_stores(cli_env, tmp_path).values():
        before = store.read_bytes() if store.is_file() else None
        monkeypatch.setenv("HARNESS_HISTORY", str(store))
        index_in_history(run)
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"harness: warning: the run was not indexed in the history: {store}: "), err
        assert "Error" not in err[0]  # the store's problem and its remedy, not an exception's name
        assert (store.read_bytes() if store.is_file() else None) == before


def test_rebuild_keeps_the_corrupt_store_aside_and_indexes_every_run_folder_once(cli_env, tmp_path) -> None:
    """`history rebuild ROOT`: the unreadable store and its journal go aside (never deleted, never replayed into the
    new store), each run folder under ROOT is indexed once; a folder it cannot read is named, exit 1."""
    root, store = tmp_path / "results", tmp_path / "h.sqlite"
    env = {**cli_env, "HARNESS_HISTORY": str(store)}
    runs = [write_run(root / "a", started="2026-11-01T00:00:00+00:00"), write_run(root / "nested" / "b", started="2026-11-02T00:00:00+00:00")]
    store.write_bytes(b"\x00garbage" * 100)
    assert "not a readable history database" in one_error_line(harness(env, "history", "list"))
    (tmp_path / "h.sqlite-journal").write_bytes(b"\x01" * 512)  # a transaction that did not finish
    done = harness(env, "history", "rebuild", str(root))
    assert done.returncode == 0 and "2 run(s)" in done.stdout, done.stdout + done.stderr
    aside = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("h.sqlite.corrupt-"))
    assert len(aside) == 2 and aside[1] == aside[0] + "-journal" and aside[0] in done.stdout, aside
    assert (tmp_path / aside[0]).read_bytes() == b"\x00garbage" * 100 and not (tmp_path / "h.sqlite-journal").exists()
    listed = harness(env, "history", "list")
    assert listed.returncode == 0 and sorted(ln.split()[0].rsplit("-", 1)[0] for ln in listed.stdout.splitlines()[1:]) == ["a", "b"]
    # again, on a readable store: kept aside as old, the same runs once each; an unreadable folder is named, exit 1
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")
    again = harness(env, "history", "rebuild", str(root))
    assert again.returncode == 1 and "2 run(s)" in again.stdout and "broken" in again.stderr, again.stdout + again.stderr
    assert any(p.name.startswith("h.sqlite.old-") for p in tmp_path.iterdir())
    assert len(harness(env, "history", "list").stdout.splitlines()) == 3  # header + 2 runs
    assert "not a folder" in one_error_line(harness(env, "history", "rebuild", str(tmp_path / "nowhere")))
    del runs


def test_each_cell_exports_as_an_mlflow_run(env, tmp_path, monkeypatch) -> None:
    run = write_run(tmp_path / "run")
    (run / "table.csv").write_text("cell\nx\n")
    uri = f"file:{tmp_path / 'mlruns'}"
    proc = harness(env, "export", "mlflow", run, "--tracking-uri", uri, "--experiment", "sweeps")
    assert proc.returncode == 0, proc.stderr
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's local file store, for reading it back here

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    by_cell = {r.data.params["cell"]: r for r in runs}
    assert sorted(by_cell) == ["ae.ort-fp32", "wg"]
    ae = by_cell["ae.ort-fp32"]
    assert ae.data.metrics["throughput_eps"] == 1000.0 and ae.data.params["backend"] == "onnxruntime"
    assert {a.path for a in client.list_artifacts(ae.info.run_id)} >= {"table.csv", "manifest.json", "cell"}


def test_compare_previous_judges_a_run_against_the_scenarios_run_before_it(env, tmp_path: Path) -> None:
    """`harness compare previous RUN`, what a scheduled sweep runs after each sweep: the first run has nothing to
    compare with (exit 0, one line); later, the latest earlier run of the same scenario is the baseline (not a run
    of another scenario, not a later run), and a NAB drop against it exits 1."""
    from harness.history.store import index_run

    store = Path(env["HARNESS_HISTORY"])
    first = write_run(tmp_path / "first", nab=50.0, started="2026-11-01T00:00:00+00:00")
    index_run(first, store)
    alone = harness(env, "compare", "previous", first)
    assert alone.returncode == 0 and alone.stdout.strip() == f"no earlier run of {first}'s scenario in {store}: nothing to compare"
    other = write_run(tmp_path / "other", nab=10.0, started="2026-11-02T00:00:00+00:00", scenario="another")
    later = write_run(tmp_path / "later", nab=10.0, started="2026-11-05T00:00:00+00:00")
    dropped = write_run(tmp_path / "dropped", nab=49.5, started="2026-11-03T00:00:00+00:00")
    for run in (other, later, dropped):
        index_run(run, store)
    proc = harness(env, "compare", "previous", dropped, "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert Path(report["a"]).name == "first" and verdict(report, "ae.ort-fp32", "nab_standard") == "regressed"
