"""`harness report`: the HTML report of a real run, checked in a real browser (headless Debian Chromium driven by
Playwright, the network cut off), its PDF read back, and its bad inputs refused in one line.

Cost: the session's quickstart run (shared with test_ray_run.py when both land on the same worker), one browser
start for the page checks, two `harness report` subprocesses (one printing a PDF), and a few CLI refusals that
end before any work: about 15 s on 2 cores beyond the quickstart run."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import harness, one_error_line, require

CHROMIUM = os.environ.get("HARNESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ORDER = ["verdicts", "insights", "leaderboard", "quantization", "serving", "cloud-vs-edge", "thresholds", "feedback",
         "history", "provenance"]
SECTIONS = ["verdicts", "insights", "leaderboard", "quantization", "serving", "history", "provenance"]  # the quickstart's:
# it scores, times fp32 against INT8, and serves the INT8 build


def need_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
        have = Path(CHROMIUM).is_file()
    except ImportError:
        have = False
    require(have, f"needs Playwright (pip install playwright) and Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def report_env(tmp_path_factory) -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONUNBUFFERED"] = "1"
    env["HARNESS_HISTORY"] = "off"
    return env


@pytest.fixture(scope="module")
def with_history(quickstart_run, tmp_path_factory) -> tuple[Path, Path, str]:
    """The quickstart run and a copy of it started a year earlier in which its last cell scored 5 NAB points more,
    both indexed in a fresh history: the report of the run then has a trend to draw and a regression to mark.
    Returns (the run folder, the store, the regressed cell)."""
    from harness.history.store import index_run

    root = tmp_path_factory.mktemp("history")
    run, earlier = root / "quickstart", root / "quickstart-earlier"
    shutil.copytree(quickstart_run[1], run)
    shutil.copytree(quickstart_run[1], earlier)
    manifest = json.loads((earlier / "manifest.json").read_text())
    manifest["started_at"] = manifest["started_at"].replace(manifest["started_at"][:4], str(int(manifest["started_at"][:4]) - 1), 1)
    (earlier / "manifest.json").write_text(json.dumps(manifest))
    regressed = manifest["cells"][-1]
    cell = earlier / "cells" / regressed / "result.json"
    result = json.loads(cell.read_text())
    result["tasks"]["score"]["result"]["nab"]["profiles"]["standard"]["score"] += 5.0
    cell.write_text(json.dumps(result))
    store = root / "history.sqlite"
    index_run(earlier, store)
    index_run(run, store)
    return run, store, regressed


def test_run_writes_its_report(quickstart_run):
    """`harness run` ends by writing report.html into the run folder, verdicts first."""
    page = (quickstart_run[1] / "report.html").read_text()
    assert page.index('id="verdicts"') < page.index('id="insights"') < page.index('id="leaderboard"') < page.index('id="provenance"')
    for fetch in ('src="http', "src='http", 'href="http', "url(http", "@import", "<link"):  # nothing fetched from anywhere
        assert fetch not in page


def test_report_in_a_browser_offline(with_history, report_env, tmp_path):
    """Loaded from disk with every request that is not file: or data: aborted: no console error, no blocked
    request, every image decoded (a plot in each of the leaderboard, quantization, serving and history sections),
    three verdict rows, the sections in order, a data title escaped, and a
    sortable table that sorts."""
    need_browser()
    from playwright.sync_api import sync_playwright

    run, store, regressed_cell = with_history
    out = tmp_path / "r.html"
    title = '<script>alert("x")</script> & co'
    proc = harness(report_env, "report", run, "--out", out, "--title", title, "--history", store, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "<script>alert" not in out.read_text()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            errors, blocked, dialogs = [], [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:"))
                       else (blocked.append(r.request.url), r.abort()))
            page.goto(out.as_uri())
            page.wait_for_load_state("load")
            assert errors == [] and blocked == [] and dialogs == []
            assert page.title() == title
            sizes = page.evaluate("[...document.images].map(i => [i.alt, i.complete && i.naturalWidth, i.naturalHeight])")
            assert all(w and h for _, w, h in sizes), sizes  # PR curves, accuracy vs speed, latency vs throughput, trend
            for section in ("leaderboard", "quantization", "serving", "history"):
                assert page.locator(f"#{section} img").count() >= 1, section
            assert page.locator("#verdicts tr.criterion").count() == 3
            verdicts = page.locator("#verdicts .verdict").all_inner_texts()
            assert set(verdicts) <= {"PASS", "FAIL", "NOT MEASURED"} and len(verdicts) == 3
            ids = page.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
            assert [i for i in ORDER if i in ids] == ids and set(SECTIONS) <= set(ids), ids
            regressed = page.locator("#history tr", has_text="regressed")
            assert regressed.count() == 1 and regressed_cell in regressed.inner_text() and "nab_standard" in regressed.inner_text()
            board = page.locator("#leaderboard table").first.inner_text()
            assert all(cell in board for cell in json.loads((run / "manifest.json").read_text())["cells"])  # "null" too
            check_sorting(page)
            check_print_fits(page)
        finally:
            browser.close()


def check_sorting(page) -> None:
    """Clicking the leaderboard's nab_standard header sorts its rows by that number, both ways."""
    board = page.locator("#leaderboard table.sortable").first
    column = board.locator("th").all_inner_texts().index("nab_standard")

    def values() -> list[float]:
        cells = board.locator(f"tbody tr td:nth-child({column + 1})")
        return [float(v) for v in cells.evaluate_all("tds => tds.map(td => td.dataset.v).filter(v => v !== undefined && v !== '')")]

    board.locator("th").nth(column).click()
    assert values() == sorted(values())
    board.locator("th").nth(column).click()
    assert values() == sorted(values(), reverse=True)


def check_print_fits(page) -> None:
    """Printed on landscape A4 (about 1047 CSS pixels inside its margins), no table, figure or block runs past the
    page's edge, where print would cut it."""
    page.set_viewport_size({"width": 1047, "height": 750})
    page.emulate_media(media="print")
    wider = page.evaluate("[...document.querySelectorAll('table, figure, img, pre')].filter(e => "
                          "e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).map(e => e.outerHTML.slice(0, 80))")
    assert wider == []


def test_pdf_prints_through_chromium(quickstart_run, report_env, tmp_path):
    """--pdf prints the same page; its text holds the verdicts and the sections."""
    need_browser()
    from pypdf import PdfReader

    out, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    proc = harness({**report_env, "HARNESS_CHROMIUM": CHROMIUM}, "report", quickstart_run[1], "--out", out, "--pdf", pdf,
                   timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert f"pdf: {pdf}" in proc.stdout
    reader = PdfReader(pdf)
    text = " ".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) >= 3  # the verdicts, then a page per section
    assert "Verdicts" in text and "NAB leaderboard" in text and "Provenance" in text
    assert any(word in text for word in ("PASS", "FAIL", "NOT MEASURED"))
    assert not list(tmp_path.glob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for published in (out, pdf):  # a report is published: it follows the umask (the subprocess inherits ours)
        assert published.stat().st_mode & 0o777 == 0o666 & ~umask, published


def test_bad_input_is_one_line(report_env, tmp_path):
    """Not a run folder, several folders without --out, an --out that is a folder or cannot be written, --pdf
    without a browser: one line each, exit 2, nothing written."""
    not_run = tmp_path / "empty"
    not_run.mkdir()
    assert "not a run folder" in one_error_line(harness(report_env, "report", not_run))
    assert "not a folder" in one_error_line(harness(report_env, "report", tmp_path / "nowhere"))
    assert "--out" in one_error_line(harness(report_env, "report", not_run, not_run))
    assert "is a folder" in one_error_line(harness(report_env, "report", not_run, "--out", tmp_path))
    (tmp_path / "file").write_text("")
    assert "writable" in one_error_line(harness(report_env, "report", not_run, "--out", tmp_path / "file" / "r.html"))
    no_browser = {**report_env, "PATH": str(Path(sys.executable).parent) + os.pathsep + str(tmp_path / "nothing"),
                  "HARNESS_CHROMIUM": ""}
    line = one_error_line(harness(no_browser, "report", not_run, "--out", tmp_path / "r.html", "--pdf", tmp_path / "r.pdf"))
    assert "Chromium" in line and "apt-get install chromium" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file"]


def test_a_report_failure_is_a_warning(tmp_path, capsys):
    """At the end of a run, a report that cannot be written warns and leaves the run's outcome alone."""
    from harness.run import write_run_report

    assert write_run_report(tmp_path) is None
    err = capsys.readouterr().err
    assert err.startswith("harness: warning:") and "harness report" in err and len(err.splitlines()) == 1


def test_pareto_front_keeps_the_variants_nothing_beats():
    from harness.report.plots import pareto_front

    points = [(1.0, 5.0), (2.0, 4.0), (3.0, 4.0), (0.5, 6.0), (2.0, 1.0), (0.4, 6.0)]
    assert pareto_front(points) == [3, 0, 2]  # slowest first; (2, 4) ties (3, 4) on accuracy and is slower
