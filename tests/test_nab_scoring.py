"""NAB v1.1 scoring: the vectorised scorer against a loop-based oracle, exactness on NAB, and `harness nab score`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.corpus.layout import SeriesFile, load_corpus
from harness.scoring.nab import score_detector
from harness.scoring.profiles import NAB_PROFILES, Profile, load_thresholds
from harness.scoring.results_layout import read_results_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nab_reference as ref  # noqa: E402

from conftest import NAB, needs_nab_results  # noqa: E402

PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
DETECTORS = ("numenta", "twitterADVec", "windowedGaussian", "null")
PARAMS = [pytest.param(d, marks=needs_nab_results(d)) for d in DETECTORS]  # each needs only its own raw outputs
TOL = 1e-9

# --- random corpora ---------------------------------------------------------------------------------------

TIE_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)


@st.composite
def corpora(draw) -> tuple[list[SeriesFile], list[np.ndarray]]:
    """1-4 files of 20-400 rows, 0-3 non-overlapping windows of width >= 2, scores in one of several styles."""
    files, scores = [], []
    for k in range(draw(st.integers(1, 4))):
        n = draw(st.integers(20, 400))
        windows = []
        lo = 0
        for _ in range(draw(st.integers(0, 3))):
            if lo > n - 2:
                break
            start = draw(st.integers(lo, n - 2))
            width = draw(st.integers(2, max(2, min(n - start, n // 4))))
            windows.append((start, start + width - 1))
            lo = start + width  # the next window may start right after this one
        style = draw(st.sampled_from(["ties", "floats", "sparse", "wide"]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        if style == "ties":  # a few values shared by many rows: thresholds sit on ties
            s = rng.choice(TIE_VALUES, n)
        elif style == "floats":
            s = rng.random(n)
        elif style == "sparse":  # mostly quiet, occasional spikes, like a real detector
            s = np.where(rng.random(n) < 0.05, rng.choice(TIE_VALUES[2:], n), rng.random(n) * 0.3)
        else:  # beyond [0, 1]: negative scores and scores above NAB's "no detection" 1.1
            s = rng.normal(0.0, 1.5, n)
        t0 = np.datetime64("2026-01-01T00:00:00", "s")
        files.append(
            SeriesFile(
                name=f"cat{k % 2}/file{k}.csv",
                n_rows=n,
                windows=np.array(windows, dtype=np.int64).reshape(-1, 2),
                timestamps=t0 + np.arange(n) * np.timedelta64(300, "s"),
                values=np.zeros(n),
            )
        )
        scores.append(np.asarray(s, dtype=np.float64))
    return files, scores


weights = st.floats(0.05, 3.0, allow_nan=False, allow_infinity=False)


@st.composite
def profile_sets(draw) -> tuple[Profile, ...]:
    if draw(st.booleans()):
        return NAB_PROFILES
    return tuple(Profile(f"p{i}", draw(weights), draw(weights), draw(weights)) for i in range(draw(st.integers(1, 3))))


def ref_files(files: list[SeriesFile], scores: list[np.ndarray]) -> list[ref.RefFile]:
    return [ref.RefFile(f.n_rows, [(int(a), int(b)) for a, b in f.windows], s.tolist()) for f, s in zip(files, scores)]


def scored_max(files: list[SeriesFile], scores: list[np.ndarray]) -> float:
    return max(float(s[ref.probation(f.n_rows):].max()) for f, s in zip(files, scores))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def check_against_reference(rep, name: str, want: ref.RefResult, files, scores) -> None:
    got, det = rep.profiles[name], rep.detection[name]
    ctx = f"profile {name}: harness {got} / {det}, reference {want}"
    assert close(got.raw, want.raw), ctx
    assert close(got.score, want.score), ctx
    assert (got.tp, got.fp, got.fn) == (want.tp, want.fp, want.fn), ctx
    if want.threshold is None:  # "no detection": any threshold above every scored row
        assert got.threshold > scored_max(files, scores), ctx
    else:
        assert close(got.threshold, want.threshold), ctx
    assert (det.detected_windows, det.windows, det.fp_events) == (want.tp, want.windows, want.fp_events), ctx
    assert close(det.recall, want.recall), ctx
    assert close(det.precision, want.precision), ctx
    assert close(det.f1, want.f1), ctx
    assert close(det.range_precision, want.range_precision), ctx
    assert close(det.range_recall, want.range_recall), ctx
    assert close(det.range_f1, want.range_f1), ctx


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(corpus=corpora(), profiles=profile_sets(), data=st.data())
def test_given_thresholds_match_reference(corpus, profiles, data) -> None:
    files, scores = corpus
    every = sorted({float(v) for s in scores for v in s})
    threshold = st.one_of(st.sampled_from(every), st.sampled_from(TIE_VALUES), st.floats(-2.0, 2.0))
    thresholds = {p.name: data.draw(threshold, label=f"threshold[{p.name}]") for p in profiles}
    rep = score_detector(files, scores, "d", thresholds, profiles)
    rf = ref_files(files, scores)
    for p in profiles:
        want = ref.evaluate(rf, thresholds[p.name], p.tp_weight, p.fp_weight, p.fn_weight)
        check_against_reference(rep, p.name, want, files, scores)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(corpus=corpora(), profiles=profile_sets())
def test_optimized_thresholds_match_reference(corpus, profiles) -> None:
    files, scores = corpus
    rep = score_detector(files, scores, "d", None, profiles)
    rf = ref_files(files, scores)
    for p in profiles:
        want = ref.optimize(rf, p.tp_weight, p.fp_weight, p.fn_weight)
        check_against_reference(rep, p.name, want, files, scores)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(corpus=corpora(), profiles=profile_sets(), data=st.data())
def test_best_without_a_group_is_that_subset_scored_alone(corpus, profiles, data) -> None:
    """Leave-one-group-out from one sweep equals a fresh optimised score of the other files (the protocol
    benchmark chooses settings with it)."""
    from harness.scoring.nab import CorpusIndex, NabSweep

    files, scores = corpus
    groups = np.array(data.draw(st.lists(st.integers(0, 2), min_size=len(files), max_size=len(files)), label="groups"))
    groups = np.unique(groups, return_inverse=True)[1]  # numbered 0, 1, ... without gaps
    got = NabSweep(CorpusIndex.build(files), scores).best_without(groups, profiles)
    assert got.shape == (groups.max() + 1, len(profiles))
    for g in range(groups.max() + 1):
        rest = [i for i in range(len(files)) if groups[i] != g]
        if not rest:
            continue
        want = score_detector([files[i] for i in rest], [scores[i] for i in rest], "d", None, profiles)
        for j, p in enumerate(profiles):
            assert close(got[g, j], want.profiles[p.name].score), (g, p.name, got[g, j], want.profiles[p.name].score)


def test_fp_events_do_not_run_across_files() -> None:
    """Row 19 (last of a 20-row file) and row 20 (first scored row of a 134-row file: probation 20) are
    consecutive row numbers in different files: two FP events, not one."""
    a, b = np.zeros(20), np.zeros(134)
    a[19] = b[20] = 1.0
    t0 = np.datetime64("2026-01-01T00:00:00", "s")
    files = [
        SeriesFile(f"c/{name}.csv", n, np.zeros((0, 2), np.int64), t0 + np.arange(n) * np.timedelta64(300, "s"), np.zeros(n))
        for name, n in (("a", 20), ("b", 134))
    ]
    want = ref.evaluate(ref_files(files, [a, b]), 0.5, 1.0, 0.11, 1.0)
    assert (want.fp, want.fp_events) == (2, 2)
    rep = score_detector(files, [a, b], "d", {p.name: 0.5 for p in NAB_PROFILES})
    check_against_reference(rep, "standard", want, files, [a, b])


# --- hand-checked cases of the reference itself ----------------------------------------------------------


def test_reference_hand_computed() -> None:
    # 20 rows: probation = 3; one window rows 10..13 (W = 4); detections at rows 5 (before: -fp), 11 (TP), 15 (FP).
    scores = [0.0] * 20
    scores[5] = scores[11] = scores[15] = 1.0
    f = ref.RefFile(20, [(10, 13)], scores)
    r = ref.evaluate([f], 0.5, 1.0, 0.11, 1.0)
    s = ref.sigmoid
    tp = s(-(13 - 11 + 1) / 4) / s(-1.0)
    fp = 0.11 * s(abs(13 - 15) / 3)
    assert math.isclose(r.raw, -0.11 + tp + fp, abs_tol=1e-15)
    assert (r.tp, r.fp, r.fn, r.fp_events) == (1, 2, 0, 2)
    assert math.isclose(r.score, 100 * (r.raw + 1) / 2)
    # the last row of a window is worth s(-1/W)/s(-1); its first row is worth 1 when scaled (s(-1)/s(-1))
    assert math.isclose(ref.evaluate([ref.RefFile(20, [(10, 13)], [0] * 10 + [1] + [0] * 9)], 1, 1, 1, 1).raw, 1.0)
    assert ref.sigmoid(3.5) == -1.0 and ref.sigmoid(0.0) == 0.0
    assert ref.probation(20) == 3 and ref.probation(10_000) == 750


@needs_nab_results("numenta")
def test_reference_reproduces_published_numenta_scores() -> None:
    """The oracle itself agrees with NAB's published scoreboard (so agreement with it means something)."""
    corpus = load_corpus(NAB, values=False)
    detector, scores = read_results_dir(NAB / "results" / "numenta", corpus)
    thresholds = load_thresholds(NAB / "config" / "thresholds.json", detector, NAB_PROFILES)
    published = json.loads((NAB / "results" / "final_results.json").read_text())["numenta"]
    prepared = [(f, ref.scored_rows(f)) for f in ref_files(corpus.files, scores)]
    for p in NAB_PROFILES:
        r = ref._evaluate(prepared, thresholds[p.name], p.tp_weight, p.fp_weight, p.fn_weight)
        assert r.score == pytest.approx(published[p.name], abs=1e-6), p.name


# --- exactness on NAB, through the command line ---------------------------------------------------------


def harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=120)


def nab_score(results_dir: Path, *how: str, json_out: bool = True) -> subprocess.CompletedProcess:
    return harness("nab", "score", str(results_dir), "--corpus", str(NAB), *how, *(["--json"] if json_out else []))


def check_profiles_json(out: dict, detector: str) -> None:
    assert out["detector"] == detector
    assert set(out["profiles"]) == set(PROFILE_NAMES)
    for name in PROFILE_NAMES:
        entry = out["profiles"][name]
        assert {"score", "raw", "threshold", "tp", "fp", "fn"} <= set(entry)
        assert entry["tp"] + entry["fn"] == 116  # every NAB window has scored rows


@pytest.mark.parametrize("detector", PARAMS)
def test_published_thresholds_reproduce_final_results(detector: str) -> None:
    p = nab_score(NAB / "results" / detector, "--thresholds", str(NAB / "config" / "thresholds.json"))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    check_profiles_json(out, detector)
    published = json.loads((NAB / "results" / "final_results.json").read_text())[detector]
    thresholds = json.loads((NAB / "config" / "thresholds.json").read_text())[detector]
    for name in PROFILE_NAMES:
        assert out["profiles"][name]["score"] == pytest.approx(published[name], abs=1e-6), name
        assert out["profiles"][name]["threshold"] == thresholds[name]["threshold"]


OPTIMIZED = {
    "numenta": (70.1011, 63.2092, 74.3202),
    "twitterADVec": (47.0620, 33.6101, 53.5011),
    "windowedGaussian": (39.6495, 20.8680, 47.4100),
    "null": (0.0, 0.0, 0.0),
}


@pytest.mark.parametrize("detector", PARAMS)
def test_optimized_scores_on_nab(detector: str) -> None:
    p = nab_score(NAB / "results" / detector, "--optimize")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    out = json.loads(p.stdout)
    check_profiles_json(out, detector)
    for name, want in zip(PROFILE_NAMES, OPTIMIZED[detector]):
        assert out["profiles"][name]["score"] == pytest.approx(want, abs=5e-5), name
    if detector == "numenta":
        for name in PROFILE_NAMES:
            assert out["profiles"][name]["threshold"] == pytest.approx(0.543099145074, abs=1e-12), name
    if detector == "null":  # no detection is optimal: nothing detected, every window missed
        for name in PROFILE_NAMES:
            assert (out["profiles"][name]["tp"], out["profiles"][name]["fp"]) == (0, 0)


@needs_nab_results("numenta")
def test_table_without_json() -> None:
    p = nab_score(NAB / "results" / "numenta", "--optimize", json_out=False)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:2] == ["profile", "score"]
    for name, want in zip(PROFILE_NAMES, OPTIMIZED["numenta"]):
        row = next(line for line in lines if line.split()[0] == name)
        assert f"{want:.4f}" in row.split()
    with pytest.raises(json.JSONDecodeError):
        json.loads(p.stdout)


# --- command-line errors --------------------------------------------------------------------------------

VICTIM = Path("realKnownCause") / "numenta_nyc_taxi.csv"


@pytest.fixture
def numenta_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "numenta"
    shutil.copytree(NAB / "results" / "numenta", dest)
    return dest


def assert_one_line_error(p: subprocess.CompletedProcess, *must_name: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    assert "Traceback" not in p.stderr
    assert p.stderr.endswith("\n") and p.stderr.count("\n") == 1, repr(p.stderr)
    for s in must_name:
        assert s in p.stderr, (s, p.stderr)


def edit_score(path: Path, row: int, cell: str) -> None:
    """Replace the anomaly_score of data row `row` (1-based)."""
    lines = path.read_text().splitlines(keepends=True)
    col = lines[0].rstrip("\r\n").split(",").index("anomaly_score")
    fields = lines[row].rstrip("\r\n").split(",")
    fields[col] = cell
    lines[row] = ",".join(fields) + lines[row][len(lines[row].rstrip("\r\n")):]
    path.write_text("".join(lines))


@needs_nab_results("numenta")
def test_error_missing_results_file(numenta_copy: Path) -> None:
    (numenta_copy / VICTIM).unlink()
    p = nab_score(numenta_copy, "--optimize")
    assert_one_line_error(p, str(numenta_copy / VICTIM))


@needs_nab_results("numenta")
def test_error_results_file_one_row_short(numenta_copy: Path) -> None:
    path = numenta_copy / VICTIM
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    p = nab_score(numenta_copy, "--optimize")
    assert_one_line_error(p, str(path))


@needs_nab_results("numenta")
@pytest.mark.parametrize("cell", ["abc", "", "nan", "NaN", "inf"])
def test_error_bad_score(numenta_copy: Path, cell: str) -> None:
    path = numenta_copy / VICTIM
    edit_score(path, 1234, cell)
    p = nab_score(numenta_copy, "--thresholds", str(NAB / "config" / "thresholds.json"))
    assert_one_line_error(p, str(path), "row 1234")


@needs_nab_results("numenta")
def test_error_detector_missing_from_thresholds(tmp_path: Path) -> None:
    thresholds = json.loads((NAB / "config" / "thresholds.json").read_text())
    del thresholds["numenta"]
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(thresholds))
    p = nab_score(NAB / "results" / "numenta", "--thresholds", str(path))
    assert_one_line_error(p, str(path), "numenta")


@needs_nab_results("numenta")
@pytest.mark.parametrize("both", [True, False])
def test_error_thresholds_xor_optimize(both: bool) -> None:
    how = ["--thresholds", str(NAB / "config" / "thresholds.json"), "--optimize"] if both else []
    p = nab_score(NAB / "results" / "numenta", *how)
    assert_one_line_error(p, "--thresholds", "--optimize")


# --- F1 that flagging everything cannot game --------------------------------------------------------------


def gamed_f1s(files, label_windows=None) -> dict[str, float]:
    """Every F1 the harness reports, for the null detector and for one that flags every row (at the F1-best
    threshold, and with every row flagged)."""
    from harness.scoring.nab import CorpusIndex, NabSweep

    out = {}
    for name, make in (("null", lambda f: np.full(f.n_rows, 0.5)), ("ones", lambda f: np.ones(f.n_rows))):
        scores = [make(f) for f in files]
        rep = score_detector(files, scores, name, label_windows=label_windows)
        for at, d in rep.detection.items():
            out[f"{name} f1@{at}"], out[f"{name} range_f1@{at}"] = d.f1, d.range_f1
        sweep = NabSweep(CorpusIndex.build(files, label_windows=label_windows), scores)
        everything = sweep.detection(int(sweep.candidates[-1]))  # the lowest threshold: every row flagged
        out[f"{name} f1@all rows"], out[f"{name} range_f1@all rows"] = everything.f1, everything.range_f1
    return out


def test_flagging_everything_gets_a_low_f1_on_the_synthetic_corpus(synthetic_root) -> None:
    corpus = load_corpus(synthetic_root, values=False)
    f1s = gamed_f1s(corpus.files, corpus.label_windows)
    assert max(f1s.values()) < 0.25, f1s
    assert f1s["ones f1@all rows"] > 0  # it does detect every window; it is just not rewarded for it


@needs_nab_results("numenta")
def test_flagging_everything_gets_a_low_f1_on_nab() -> None:
    """Event-based precision used to count a run of detections as one alert, so flagging every row gave 0.5757,
    the best F1 of every detector on NAB (null included). Alert events are now cut at the file's window
    length, and range-based precision weighs each alert by how much of it lies inside windows."""
    corpus = load_corpus(NAB, values=False)
    f1s = gamed_f1s(corpus.files, corpus.label_windows)
    assert max(f1s.values()) < 0.2, f1s
    _, numenta = read_results_dir(NAB / "results" / "numenta", corpus)
    real = score_detector(corpus.files, numenta, "numenta", label_windows=corpus.label_windows).detection
    assert real["best_f1"].f1 > 0.6 and real["standard"].range_f1 > 0.4  # a real detector stays well above


def test_alert_events_are_cut_at_the_window_length() -> None:
    """One file of 200 rows, one window of 20 rows (100..119): a run of 45 false positives right after the
    window spans the blocks [120, 140), [140, 160), [160, 180): three events, not one."""
    t0 = np.datetime64("2026-01-01T00:00:00", "s")
    f = SeriesFile("c/f.csv", 200, np.array([[100, 119]]), t0 + np.arange(200) * np.timedelta64(300, "s"), np.zeros(200))
    s = np.zeros(200)
    s[120:165] = 1.0
    s[105] = 1.0
    want = ref.evaluate(ref_files([f], [s]), 0.5, 1.0, 0.11, 1.0)
    assert (want.fp, want.fp_events, want.tp) == (45, 3, 1)
    rep = score_detector([f], [s], "d", {p.name: 0.5 for p in NAB_PROFILES})
    check_against_reference(rep, "standard", want, [f], [s])
