"""The feedback loop (harness.feedback): verdicts are used only once they have arrived, a confirmed false alarm
silences what scores like it (not what scores higher), a confirmed miss lowers the threshold, a replayed log
decides as the reviewer it recorded; the review log and Label Studio round trips keep every verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.corpus.layout import SeriesFile
from harness.errors import InputError
from harness.feedback.labelstudio import CONTROL, read_export, tasks
from harness.feedback.log import build_entries, merged, verdicts_of
from harness.feedback.loop import FeedbackThreshold, LabelReviewer, LogReviewer
from harness.results.review_log import parse, render, stamp

from conftest import harness, one_error_line, write_nab
from test_report import result

DAY = 86_400.0
STEP = 300.0  # 5-minute records


def stream(n: int = 288 * 10, alarms: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = 1.6e9 + STEP * np.arange(n)
    x = np.full(n, 0.1)
    for row, value in (alarms or {}).items():
        x[row] = value
    return t, x


def run(policy, t, x, windows=np.zeros((0, 2), np.int64), delay=0.0, error_rate=0.0):
    return policy.apply(t, x, LabelReviewer(t, windows, delay, error_rate), block_rows=20)


def test_without_arrived_verdicts_it_is_the_fixed_threshold() -> None:
    t, x = stream(alarms={300: 0.8, 600: 0.9, 900: 0.8})
    alerts = run(FeedbackThreshold(threshold=0.5), t, x, delay=math.inf)
    assert (alerts == (x >= 0.5)).all()


def test_a_confirmed_false_alarm_silences_alike_scores_once_its_verdict_arrives() -> None:
    daily = {288 * d + 100: 0.80 + 0.001 * d for d in range(1, 8)}  # a pattern that recurs daily, scoring alike
    t, x = stream(alarms={**daily, 288 * 8 + 100: 0.95})  # then something that scores far higher
    policy = FeedbackThreshold(threshold=0.5, band=0.02, forget_s=None)
    rows = sorted(daily)
    same_day = run(policy, t, x, delay=0.0)
    assert same_day[rows[0]] and not same_day[rows[1:]].any()  # the first is judged at once; the rest are silenced
    assert same_day[288 * 8 + 100]  # a higher score still alerts
    late = run(policy, t, x, delay=2.5 * DAY)  # the verdict arrives after the next two days' alarms
    assert late[rows[:3]].all() and not late[rows[3:]].any()


def test_a_silence_ends_after_forget_s() -> None:
    t, x = stream(alarms={288 * d + 100: 0.8 for d in range(1, 9)})
    alerts = run(FeedbackThreshold(threshold=0.5, band=0.02, forget_s=3.2 * DAY), t, x)
    assert alerts[[288 + 100, 288 * 5 + 100]].all() and not alerts[[288 * 2 + 100, 288 * 4 + 100]].any()


def test_a_true_alert_silences_nothing_and_a_confirmed_miss_lowers_the_threshold() -> None:
    t, x = stream(alarms={500: 0.8, 800: 0.8, 1500: 0.3, 2000: 0.35})
    windows = np.array([[480, 520], [780, 820], [1480, 1520], [1980, 2020]])
    kept = run(FeedbackThreshold(threshold=0.5, lower_on_miss=False), t, x, windows)
    assert kept[[500, 800]].all() and not kept[[1500, 2000]].any()
    lowered = run(FeedbackThreshold(threshold=0.5, lower_on_miss=True, min_threshold=0.2), t, x, windows)
    assert lowered[[500, 800, 2000]].all() and not lowered[1500]  # the miss at 0.3 is confirmed at 1520, then 0.35 alerts


def test_a_wrong_reviewer_silences_true_alarms() -> None:
    t, x = stream(alarms={500: 0.8, 800: 0.8})
    windows = np.array([[480, 520], [780, 820]])
    right = run(FeedbackThreshold(threshold=0.5), t, x, windows, error_rate=0.0)
    wrong = run(FeedbackThreshold(threshold=0.5), t, x, windows, error_rate=1.0)
    assert right[[500, 800]].all() and wrong[500] and not wrong[800]


def test_verdicts_never_change_alerts_before_they_arrive() -> None:
    rng = np.random.default_rng(3)
    t, _ = stream()
    x = rng.uniform(0, 1, len(t))
    windows = np.array([[700, 760], [1800, 1860]])
    policy = FeedbackThreshold(threshold=0.97)
    delayed = run(policy, t, x, windows, delay=DAY)
    never = run(policy, t, x, windows, delay=math.inf)
    first = int(np.flatnonzero(never)[0])
    cut = np.searchsorted(t, t[first] + DAY)  # no verdict can arrive before the first alert's, a day later
    assert (delayed[:cut] == never[:cut]).all() and (delayed != never).any()


def corpus_file(n: int = 2000) -> tuple[SeriesFile, np.ndarray]:
    t = (np.datetime64("2026-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")).astype("datetime64[s]")
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, n)
    f = SeriesFile("cat/a.csv", n, np.array([[600, 700], [1400, 1500]]), t, np.zeros(n))
    x[650] = 1.5  # the first window is caught; the second is missed
    x[1400:1501] = np.minimum(x[1400:1501], 0.5)
    return f, x


def test_the_review_log_replays_as_the_reviewer_it_recorded() -> None:
    f, x = corpus_file()
    entries = build_entries("c", "det", "nab_standard", 0.99, [f], [x], 0.15)
    kinds = [e.kind for e in entries]
    assert kinds.count("missed") == 1 and entries[kinds.index("missed")].first_row == 1400
    assert all(e.first_row >= 300 and not e.judged for e in entries)  # nothing in probation (15% of 2000 rows)
    reviewer = LabelReviewer(np.asarray(f.timestamps).astype(np.float64), f.windows, DAY)
    for e in entries:  # what `harness feedback simulate` does
        v = reviewer.alert(e.first_row) if e.kind == "alert" else reviewer.closed(e.last_row, -1)
        e.verdict, e.verdict_at = ("anomaly" if v.anomaly else "normal"), stamp(v.arrives)
    again = parse(render(entries), "log.csv")
    assert again == entries
    policy = FeedbackThreshold(threshold=0.99)
    t = np.asarray(f.timestamps).astype(np.float64)
    live = policy.apply(t, x, LabelReviewer(t, f.windows, DAY), 20, 300)
    replayed = policy.apply(t, x, LogReviewer(verdicts_of(again, f.name)), 20, 300)
    assert (live == replayed).all() and live.sum() < (x[300:] >= 0.99).sum()


def test_a_rebuilt_log_keeps_every_verdict() -> None:
    f, x = corpus_file()
    old = build_entries("c", "det", "nab_standard", 0.99, [f], [x], 0.15)
    gone = build_entries("gone", "det", "nab_standard", 0.99, [f], [x], 0.15)
    old[0].verdict, old[0].verdict_at, old[0].reviewer = "normal", "2026-01-05 00:00:00", "ann"
    gone[0].verdict = "anomaly"
    fresh = merged(build_entries("c", "det", "nab_standard", 0.99, [f], [x], 0.15), old + gone)
    assert fresh[0].verdict == "normal" and fresh[0].reviewer == "ann"
    assert fresh[-1].cell == "gone" and fresh[-1].verdict == "anomaly"  # a cell no longer rebuilt keeps its verdicts


def test_a_bad_log_is_one_clear_error() -> None:
    f, x = corpus_file()
    text = render(build_entries("c", "det", "nab_standard", 0.99, [f], [x], 0.15))
    lines = text.splitlines()
    assert lines[2].endswith(",,,")  # verdict, verdict_at and reviewer are empty
    lines[2] = lines[2][:-3] + ",maybe,,"
    with pytest.raises(InputError, match="log.csv: line 3: verdict must be empty, anomaly or normal"):
        parse("\n".join(lines), "log.csv")
    with pytest.raises(InputError, match="missing columns"):
        parse("a,b\n1,2\n", "log.csv")


def label_studio_export(todo: list[dict], verdict: str, cancelled_first: bool = False) -> list[dict]:
    """What Label Studio's JSON export holds once someone has annotated the imported tasks."""
    def annotation(choice, cancelled=False):
        return {"id": 1, "was_cancelled": cancelled, "result": [
            {"from_name": CONTROL, "to_name": "summary", "type": "choices", "value": {"choices": [choice]}}]}
    out = []
    for n, task in enumerate(todo):
        annotations = [annotation(verdict)]
        if cancelled_first:
            annotations.append(annotation("anomaly" if verdict == "normal" else "normal", cancelled=True))
        out.append({"id": n + 1, "data": task["data"], "annotations": annotations, "predictions": []})
    return out


def test_label_studio_round_trip(tmp_path) -> None:
    f, x = corpus_file()
    entries = build_entries("c", "det", "nab_standard", 0.99, [f], [x], 0.15)
    entries[0].verdict = "anomaly"
    todo = tasks(entries, [f], {"c": [x]}, context=10)
    assert len(todo) == len(entries) - 1 and todo[0]["data"]["review_id"] == entries[1].id
    assert {"title", "summary", "stream", "score", "series"} <= set(todo[0]["data"])
    # the stream around the entry, 10 records each side, clipped at the file's ends; missing scores are gaps
    e, series = entries[1], todo[0]["data"]["series"]
    lo = max(0, e.first_row - 10)
    assert series["time"][0] == str(f.timestamps[lo]).replace("T", " ") and len(series["time"]) == min(f.n_rows, e.last_row + 11) - lo
    assert series["score"] == list(x[lo : e.last_row + 11]) and sum(series["entry"]) == e.last_row - e.first_row + 1
    x[lo] = np.nan
    assert tasks(entries, [f], {"c": [x]}, context=10)[0]["data"]["series"]["score"][0] is None
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio_export(todo, "normal", cancelled_first=True)))
    assert read_export(export) == {e.id: "normal" for e in entries[1:]}  # a cancelled annotation counts for nothing
    export.write_text(json.dumps(label_studio_export(todo[:1], "perhaps")))
    with pytest.raises(InputError, match='choices\\[0\\]: verdict must be anomaly or normal, got "perhaps"'):
        read_export(export)
    export.write_text("[{]")
    with pytest.raises(InputError, match="could not parse"):
        read_export(export)
    export.write_text(json.dumps([{"data": {"image": "x.png"}}]))
    with pytest.raises(InputError, match=r"tasks\[0\].data.review_id: expected the id of a review log entry"):
        read_export(export)


def write_reviewed_run(out: Path, nab: Path, scores: np.ndarray) -> Path:
    """A finished run folder as `harness run` leaves it, without Ray: the corpus at `nab` (one file), one ok
    cell (threshold 0.9) with these scores, and its review log."""
    from harness.corpus.layout import load_corpus
    from harness.feedback.review import build_log, reviewable
    from harness.results.folder import SCORES, RunFolder
    from harness.results.schema import Manifest

    corpus = load_corpus(nab)
    cell = result("ae.ort-fp32", "onnxruntime", "fp32", 50.0, 1000.0, threshold=0.9)
    manifest = Manifest(scenario={"resolved": {"name": "fb"}}, corpus={"root": str(corpus.root), "fingerprint": corpus.fingerprint},
                        cells=[cell.cell.id], command=["harness", "run"], environment={}, started_at="2026-11-01T00:00:00+00:00",
                        status="complete")
    folder = RunFolder(out)
    folder.write_manifest(manifest)
    folder.record(cell, "score", cell.tasks["score"], {SCORES: [scores]})
    folder.write_review(build_log(reviewable(folder, [cell]), corpus))
    return folder.root


@pytest.fixture
def reviewed_run(tmp_path) -> Path:
    """A tiny corpus, one ok cell with one alert (inside the labelled window), and its review log."""
    return write_reviewed_run(tmp_path / "run", write_nab(tmp_path / "nab"), np.array([0.1, 0.2, 0.3, 1.0, 0.1]))


def test_a_label_studio_export_imports_through_the_cli(cli_env, reviewed_run, tmp_path) -> None:
    from harness.feedback.review import label_studio_tasks, open_run

    todo = label_studio_tasks(open_run(reviewed_run), parse((reviewed_run / "review" / "log.csv").read_text(), "log.csv"), 10)
    assert len(todo) == 1
    export = tmp_path / "export.json"
    export.write_text(json.dumps(label_studio_export(todo, "normal")))
    proc = harness(cli_env, "feedback", "import", reviewed_run, export)
    assert proc.returncode == 0, proc.stderr
    assert [e.verdict for e in parse((reviewed_run / "review" / "log.csv").read_text(), "log.csv")] == ["normal"]


REVIEW_ID = "ae.ort-fp32|cat/f.csv|alert|3"  # the one entry of reviewed_run's log


def annotated(items: object = None, **task: object) -> str:
    """A one-task export whose annotation's result items (or the task's own fields) are replaced, as JSON text."""
    ok = [{"from_name": CONTROL, "to_name": "summary", "type": "choices", "value": {"choices": ["normal"]}}]
    base = {"id": 1, "data": {"review_id": REVIEW_ID}, "annotations": [{"id": 1, "result": ok if items is None else items}]}
    return json.dumps([{**base, **task}])


DEEP = 100_000  # json's decoder recurses per level: RecursionError, not JSONDecodeError
NOT_PARSED = "expected Label Studio's JSON export, could not parse it (nested too deeply)"


@pytest.mark.parametrize("text, place, expect", [
    (annotated(data=["x"]), "tasks[0].data", "expected an object, got a list"),
    (annotated(annotations=5), "tasks[0].annotations", "expected a list, got 5"),
    (annotated(annotations=math.nan), "tasks[0].annotations", "expected a list, got NaN"),  # json writes and reads NaN
    (annotated(annotations=["x"]), "tasks[0].annotations[0]", 'expected an object, got "x"'),
    (annotated(["verdict"]), "tasks[0].annotations[0].result[0]", 'expected an object, got "verdict"'),
    (annotated([{"from_name": CONTROL, "value": "normal"}]), "tasks[0].annotations[0].result[0].value", 'expected an object, got "normal"'),
    (annotated([{"from_name": CONTROL}]), "tasks[0].annotations[0].result[0].value", "expected an object, got nothing"),
    (annotated([{"from_name": CONTROL, "value": ["normal"]}]), "tasks[0].annotations[0].result[0].value", "expected an object, got a list"),
    (annotated([{"from_name": CONTROL, "value": {"choices": "normal"}}]), "tasks[0].annotations[0].result[0].value.choices",
     'expected a list, got "normal"'),
    (annotated(5), "tasks[0].annotations[0].result", "expected a list, got 5"),
    (json.dumps([{"data": {"review_id": 7}}]), "tasks[0].data.review_id",
     "expected the id of a review log entry (tasks must come from `harness feedback export`), got 7"),
    ("[NaN]", "tasks[0]", "expected an object, got NaN"),
    ("[" * DEEP + "]" * DEEP, None, NOT_PARSED),
    ('{"a":' * DEEP + "1" + "}" * DEEP, None, NOT_PARSED),
    (None, None, "is a folder: expected Label Studio's JSON export file"),
], ids=["data-list", "annotations-5", "annotations-nan", "annotation-string", "result-string", "value-string", "value-missing",
        "value-list", "choices-string", "result-5", "review-id-number", "task-nan", "deep-lists", "deep-objects", "folder"])
def test_a_malformed_export_is_one_line_naming_the_place_and_the_log_is_untouched(cli_env, reviewed_run, tmp_path, text, place, expect) -> None:
    export = tmp_path / "export.json"
    if text is None:
        export.mkdir()
    else:
        export.write_text(text)
    log = reviewed_run / "review" / "log.csv"
    before = (log.read_bytes(), log.stat().st_mtime_ns)
    line = one_error_line(harness(cli_env, "feedback", "import", reviewed_run, export))
    assert line == f"harness: error: {export}: {place + ': ' if place else ''}{expect}"
    assert (log.read_bytes(), log.stat().st_mtime_ns) == before
    assert sorted(p.name for p in log.parent.iterdir()) == ["log.csv"]  # no temporary file left beside it


def test_status_measures_the_backlog_against_the_delay_feedback_helps_at(cli_env, reviewed_run, tmp_path) -> None:
    """The one alert (00:15, the stream ends 00:20) waits 5 minutes unjudged; a verdict that arrives after the
    stream's end is still pending; at a later `--now` it has arrived. The textfile holds what the table says."""
    from prometheus_client.parser import text_string_to_metric_families

    from harness.feedback.status import useful_delays

    metrics = tmp_path / "collector" / "fb.prom"
    proc = harness(cli_env, "feedback", "status", reviewed_run, "--metrics-file", metrics)
    assert proc.returncode == 0, proc.stderr
    assert "| ae.ort-fp32 | 1 | 1 | 5.0m |  | not evaluated (harness feedback evaluate) |  |" in proc.stdout, proc.stdout
    got = {(s.name, s.labels["cell"]): s.value for f in text_string_to_metric_families(metrics.read_text()) for s in f.samples}
    assert got == {("harness_feedback_pending_entries", "ae.ort-fp32"): 1, ("harness_feedback_oldest_pending_age_seconds", "ae.ort-fp32"): 300}
    export = tmp_path / "export.json"
    export.write_text(annotated())
    assert harness(cli_env, "feedback", "import", reviewed_run, export, "--delay", "1h").returncode == 0
    (reviewed_run / "review" / "feedback.csv").write_text(
        "cell,feedback,delay,nab_delta,fp_events_change_pct\nae.ort-fp32,none,,0,0\n"
        "ae.ort-fp32,simulated (error rate 0),1m,1.5,-50\nae.ort-fp32,simulated (error rate 0),1h,0,0\n")
    proc = harness(cli_env, "feedback", "status", reviewed_run)
    assert "| ae.ort-fp32 | 1 | 1 | 5.0m | 1.0h | 1.0m | LATE: run without the feedback policy until reviewers are within 1.0m |" in proc.stdout
    proc = harness(cli_env, "feedback", "status", reviewed_run, "--now", "2026-01-01 02:00:00")
    assert "| ae.ort-fp32 | 1 | 0 | 0s | 1.0h | 1.0m | ok |" in proc.stdout, proc.stdout
    assert useful_delays([{"cell": "c", "feedback": "simulated", "delay": "1d", "nab_delta": "-2", "fp_events_change_pct": "-40"}]) == {}
    assert "--now: expected a time like" in one_error_line(harness(cli_env, "feedback", "status", reviewed_run, "--now", "soon"))
