"""The review loop against real servers, not files shaped like theirs: a Label Studio (SQLite) and an MLflow
tracking server (SQLite backend, artefacts served by it) that this module starts on the loopback of a network
namespace with a routable address, and stops. Reviewers' annotations are made through Label Studio's API, with a
personal access token got by logging in, as a user gets one.

The servers come from their own virtual environment (`tests/servers.txt`; Label Studio pins Django and much else),
`.servers/` at the repository root unless HARNESS_TEST_SERVERS names another; the README's test command makes it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, ROUTABLE_IP, harness_cmd, kill_stragglers, require, routable_namespace, stop_group

SERVERS = Path(os.environ.get("HARNESS_TEST_SERVERS", REPO / ".servers"))
LS_PORT, MLFLOW_PORT = 18080, 18081  # inside the module's own namespace: nothing else is there
ALERT_ROWS = (100, 210, 330)  # reviewed_run's alerts: the one at 210 is inside the labelled window


def server_bin(name: str) -> Path:
    path = SERVERS / "bin" / name
    require(path.is_file(), f"{path} missing: python -m venv .servers && .servers/bin/pip install -r tests/servers.txt")
    return path


@dataclass
class Servers:
    ns: str
    root: Path
    label_studio: str
    mlflow: str
    key_file: Path
    login: tuple[str, str]  # the reviewer's email and password
    procs: list[subprocess.Popen]

    def cmd(self, *args: str | Path) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *map(str, args)]

    def harness(self, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*harness_cmd(*map(str, args))), capture_output=True, text=True, timeout=timeout,
                              cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def python(self, code: str, *args: str) -> str:
        """Run `code` in the namespace (the SDK's client calls, as a reviewer's tool would make them)."""
        proc = subprocess.run(self.cmd(sys.executable, "-c", code, *args), capture_output=True, text=True, timeout=120, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout


def _wait_http(servers: Servers, url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    probe = servers.cmd("curl", "-sf", "-o", "/dev/null", url)
    while subprocess.run(probe).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not come up (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _personal_access_token(servers: Servers, email: str, password: str) -> str:
    """Log in through Label Studio's login form and create a personal access token, as a user does in the UI."""
    code = """
import sys, requests
url, email, password = sys.argv[1:]
s = requests.Session()
s.get(url + "/user/login/").raise_for_status()
r = s.post(url + "/user/login/", data={"email": email, "password": password, "csrfmiddlewaretoken": s.cookies["csrftoken"]},
           allow_redirects=False)
assert r.status_code == 302, (r.status_code, r.text[:300])
r = s.post(url + "/api/token/", headers={"X-CSRFToken": s.cookies["csrftoken"]})
r.raise_for_status()
print(r.json()["token"])
"""
    return servers.python(code, servers.label_studio, email, password).strip()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    label_studio, mlflow = server_bin("label-studio"), server_bin("mlflow")
    root = tmp_path_factory.mktemp("review-servers")
    with routable_namespace("harness-review") as ns:
        email, password = "reviewer@example.com", secrets.token_urlsafe(16)
        s = Servers(ns, root, f"http://127.0.0.1:{LS_PORT}", f"http://127.0.0.1:{MLFLOW_PORT}", root / "ls.key", (email, password), [])
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(root / "ls"), "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
               "PYTHONUNBUFFERED": "1"}
        logs = {"ls": root / "label-studio.log", "mlflow": root / "mlflow.log"}
        try:
            with logs["ls"].open("w") as log:  # migrations on a new database: about 25 s here
                s.procs.append(subprocess.Popen(s.cmd(label_studio, "start", "--data-dir", root / "ls", "--internal-host", "127.0.0.1",
                                                      "-p", LS_PORT, "--no-browser", "--username", email, "--password", password),
                                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
            with logs["mlflow"].open("w") as log:
                s.procs.append(subprocess.Popen(s.cmd(mlflow, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                                                      "--artifacts-destination", root / "artifacts", "--host", "127.0.0.1",
                                                      "--port", MLFLOW_PORT, "--workers", "1"),
                                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
            _wait_http(s, f"{s.mlflow}/health", s.procs[1], 120, logs["mlflow"])
            _wait_http(s, f"{s.label_studio}/health", s.procs[0], 240, logs["ls"])
            s.key_file.write_text(_personal_access_token(s, email, password) + "\n")
            s.key_file.chmod(0o600)
            yield s
        finally:
            for proc in s.procs:
                stop_group(proc)
            kill_stragglers(str(root))


@pytest.fixture
def reviewed_run(tmp_path: Path) -> Path:
    """A corpus of one 400-record file with a labelled window, one ok cell whose scores cross its threshold (0.9)
    at ALERT_ROWS, and its review log."""
    from test_feedback import write_reviewed_run

    nab = tmp_path / "nab"
    (nab / "data" / "cat").mkdir(parents=True)
    start = np.datetime64("2026-01-01T00:00:00")
    stamps = [str(start + np.timedelta64(300 * i, "s")).replace("T", " ") for i in range(400)]
    values = np.sin(np.arange(400) / 10.0)
    (nab / "data" / "cat" / "f.csv").write_text("timestamp,value\n" + "".join(f"{t},{v:.6f}\n" for t, v in zip(stamps, values)))
    (nab / "labels").mkdir()
    (nab / "labels" / "combined_windows.json").write_text(json.dumps({"cat/f.csv": [[stamps[200] + ".000000", stamps[220] + ".000000"]]}))
    scores = np.full(400, 0.1)
    scores[list(ALERT_ROWS)] = 0.95
    return write_reviewed_run(tmp_path / "run", nab, scores)


def _log(run: Path) -> dict[str, object]:
    from harness.results.review_log import parse

    return {e.id: e for e in parse((run / "review" / "log.csv").read_text(), "log.csv")}


def test_push_annotate_pull_through_a_real_label_studio(servers: Servers, reviewed_run: Path) -> None:
    """push creates the project (our time-series labeling config, accepted by the server) and imports a task per
    unjudged entry, each with the stream around it; a second push adds nothing; annotations made through the API
    (one cancelled) come back into the review log with `pull`, usable `--delay` after each alert."""
    entries = _log(reviewed_run)
    assert [e.first_row for e in entries.values()] == list(ALERT_ROWS)
    key = ["--label-studio", servers.label_studio, "--api-key-file", servers.key_file]
    first = servers.harness("feedback", "push", reviewed_run, *key, "--context", "50")
    assert first.returncode == 0, first.stderr
    assert "3 task(s) added to Label Studio project" in first.stdout and "(created; 0 already there)" in first.stdout, first.stdout
    project = json.loads((reviewed_run / "review" / "labelstudio-project.json").read_text())
    assert project["url"] == servers.label_studio
    again = servers.harness("feedback", "push", reviewed_run, *key)
    assert again.returncode == 0 and "0 task(s) added" in again.stdout and "(existing; 3 already there)" in again.stdout, again.stdout

    # what the server holds, read and annotated through its SDK, as a reviewer's tool would
    code = """
import json, sys
from label_studio_sdk import LabelStudio
url, key_file, project = sys.argv[1], sys.argv[2], int(sys.argv[3])
ls = LabelStudio(base_url=url, api_key=open(key_file).read().strip())
config = ls.projects.get(id=project).label_config
tasks = sorted(ls.tasks.list(project=project, fields="all"), key=lambda t: t.data["review_id"])
verdict = lambda choice: [{"from_name": "verdict", "to_name": "stream", "type": "choices", "value": {"choices": [choice]}}]
by_row = {int(t.data["review_id"].rsplit("|", 1)[1]): t for t in tasks}
ls.annotations.create(id=by_row[100].id, result=verdict("normal"), was_cancelled=False)
ls.annotations.create(id=by_row[210].id, result=verdict("anomaly"), was_cancelled=False)
ls.annotations.create(id=by_row[210].id, result=verdict("normal"), was_cancelled=True)  # skipped: counts for nothing
print(json.dumps({"config": config, "tasks": [t.data for t in tasks]}))
"""
    seen = json.loads(servers.python(code, servers.label_studio, str(servers.key_file), str(project["project"])))
    assert "<TimeSeries" in seen["config"] and 'toName="stream"' in seen["config"]
    assert sorted(t["review_id"] for t in seen["tasks"]) == sorted(entries)
    for task in seen["tasks"]:
        series, row = task["series"], int(task["review_id"].rsplit("|", 1)[1])
        assert len(series["time"]) == len(series["value"]) == len(series["score"]) == 101  # 50 each side
        assert series["time"][50] == entries[task["review_id"]].time and series["score"][50] == 0.95
        assert series["entry"][50] == 1.0 and sum(series["entry"]) == 1.0 and set(series["threshold"]) == {0.9}
        assert series["value"][0] == pytest.approx(np.sin((row - 50) / 10.0), abs=1e-6)

    pulled = servers.harness("feedback", "pull", reviewed_run, *key, "--delay", "1h")
    assert pulled.returncode == 0, pulled.stderr
    assert "2 verdict(s) imported (2 of 3 entries judged)" in pulled.stdout, pulled.stdout
    after = {e.first_row: e for e in _log(reviewed_run).values()}
    assert (after[100].verdict, after[210].verdict, after[330].verdict) == ("normal", "anomaly", "")
    assert after[100].reviewer == "label-studio"
    assert np.datetime64(after[210].verdict_at) - np.datetime64(after[210].time) == np.timedelta64(3600, "s")
    # the next push offers nothing judged: those two are in the project already, and the third too
    assert "0 task(s) added" in servers.harness("feedback", "push", reviewed_run, *key).stdout


BROWSER = """
import json, sys
from playwright.sync_api import sync_playwright
url, email, password, task, chromium, shot = sys.argv[1:]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # the page also asks analytics and error-reporting hosts; with no way out of the namespace they would hang
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(url) else r.abort())
    page.goto(url + "/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    page.goto(f"{url}/projects/{task}")
    page.wait_for_selector('path[stroke="#d62728"]', timeout=60_000)  # the score's line is drawn
    seen = {c: page.locator(f'path[stroke="{c}"]').count() for c in ("#1f77b4", "#d62728", "#7f7f7f", "#ff7f0e")}
    legends = [page.get_by_text(t, exact=True).count() for t in ("anomaly score", "threshold")]
    page.screenshot(path=shot)
    page.locator("label:has-text('anomaly')").first.click()
    page.get_by_role("button", name="Submit").click()
    page.wait_for_load_state("networkidle")
    browser.close()
print(json.dumps({"paths": seen, "legends": legends}))
"""


def test_a_reviewer_sees_the_stream_and_answers_in_the_browser(servers: Servers, reviewed_run: Path, tmp_path: Path) -> None:
    """In Chromium, logged in as the reviewer: a pushed task shows the stream around its alert (the values, the
    score with its threshold, the alert's marker: each a line drawn in its colour) and the two choices; the answer
    clicked there is the verdict `pull` brings back."""
    from test_report_html import CHROMIUM, need_browser

    need_browser()
    key = ["--label-studio", servers.label_studio, "--api-key-file", servers.key_file]
    assert servers.harness("feedback", "push", reviewed_run, *key).returncode == 0
    project = json.loads((reviewed_run / "review" / "labelstudio-project.json").read_text())["project"]
    code = """
import sys
from label_studio_sdk import LabelStudio
ls = LabelStudio(base_url=sys.argv[1], api_key=open(sys.argv[2]).read().strip())
print(next(t.id for t in ls.tasks.list(project=int(sys.argv[3])) if t.data["review_id"].endswith("|210")))
"""
    task = servers.python(code, servers.label_studio, str(servers.key_file), str(project)).strip()
    shot = tmp_path / "task.png"
    seen = json.loads(servers.python(BROWSER, servers.label_studio, *servers.login, f"{project}/data?task={task}", CHROMIUM, str(shot)))
    assert all(n >= 1 for n in seen["paths"].values()) and seen["legends"] == [1, 1], seen
    assert shot.stat().st_size > 20_000  # a page with plots, kept beside the test's files
    pulled = servers.harness("feedback", "pull", reviewed_run, *key)
    assert pulled.returncode == 0 and "1 verdict(s) imported" in pulled.stdout, pulled.stdout + pulled.stderr
    assert {e.first_row: e.verdict for e in _log(reviewed_run).values()} == {100: "", 210: "anomaly", 330: ""}


def test_a_refused_key_an_absent_server_and_an_unpushed_run_are_one_line_each(servers: Servers, reviewed_run: Path, tmp_path: Path) -> None:
    from conftest import one_error_line

    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-a-token-" + secrets.token_hex(16) + "\n")
    log = (reviewed_run / "review" / "log.csv").read_bytes()
    line = one_error_line(servers.harness("feedback", "push", reviewed_run, "--label-studio", servers.label_studio, "--api-key-file", wrong))
    assert "refused the API key from --api-key-file (HTTP 401" in line, line
    line = one_error_line(servers.harness("feedback", "push", reviewed_run, "--label-studio", "http://127.0.0.1:9", "--api-key-file", wrong))
    assert line.startswith("harness: error: --label-studio: cannot reach Label Studio at http://127.0.0.1:9"), line
    line = one_error_line(servers.harness("feedback", "pull", reviewed_run, "--label-studio", servers.label_studio,
                                          "--api-key-file", servers.key_file))
    assert line.endswith(f"--label-studio: this run has no project on {servers.label_studio}: `harness feedback push` it there first"), line
    env = {k: v for k, v in os.environ.items() if k != "LABEL_STUDIO_API_KEY"}
    proc = subprocess.run(servers.cmd(*harness_cmd("feedback", "push", str(reviewed_run), "--label-studio", servers.label_studio)),
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert "no API key: pass --api-key-file PATH or set LABEL_STUDIO_API_KEY" in one_error_line(proc)
    assert (reviewed_run / "review" / "log.csv").read_bytes() == log
    assert not (reviewed_run / "review" / "labelstudio-project.json").exists()


def test_a_run_exports_to_a_real_mlflow_tracking_server(servers: Servers, tmp_path: Path) -> None:
    """Every cell an MLflow run on the server (SQLite behind it), with its parameters, metrics and artefacts
    uploaded through the server and listed back from it; a URI where nothing answers is one line."""
    from conftest import one_error_line
    from test_history import write_run

    run = write_run(tmp_path / "run")
    (run / "table.csv").write_text("cell\nx\n")
    proc = servers.harness("export", "mlflow", run, "--tracking-uri", servers.mlflow, "--experiment", "nightly")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"2 MLflow run(s) logged to {servers.mlflow}"), proc.stdout
    code = """
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
runs = client.search_runs([client.get_experiment_by_name("nightly").experiment_id])
print(json.dumps({r.data.params["cell"]: {"params": r.data.params, "metrics": r.data.metrics,
                  "artifacts": sorted(a.path for a in client.list_artifacts(r.info.run_id)),
                  "table": open(client.download_artifacts(r.info.run_id, "table.csv", sys.argv[2])).read()} for r in runs}))
"""
    out = tmp_path / "downloaded"
    out.mkdir()
    got = json.loads(servers.python(code, servers.mlflow, str(out)))
    assert sorted(got) == ["ae.ort-fp32", "wg"]
    ae = got["ae.ort-fp32"]
    assert ae["metrics"]["throughput_eps"] == 1000.0 and ae["params"]["backend"] == "onnxruntime"
    assert {"table.csv", "manifest.json", "cell"} <= set(ae["artifacts"]) and ae["table"] == "cell\nx\n"
    assert (servers.root / "artifacts").is_dir() and any((servers.root / "artifacts").rglob("table.csv"))  # stored by the server
    line = one_error_line(servers.harness("export", "mlflow", run, "--tracking-uri", "http://127.0.0.1:9",
                                          env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}))
    assert line.startswith("harness: error: --tracking-uri: the tracking server refused or did not answer"), line


def test_the_servers_answer_on_loopback_only(servers: Servers) -> None:
    """By trying: from inside their namespace, each server answers on 127.0.0.1 and refuses on the namespace's
    routable address; and nothing in the namespace listens beyond loopback."""
    for port in (LS_PORT, MLFLOW_PORT):
        probe = f"""
import socket
for host in ("127.0.0.1", "{ROUTABLE_IP}"):
    try:
        socket.create_connection((host, {port}), timeout=3).close(); print(host, "open")
    except OSError as exc:
        print(host, type(exc).__name__)
"""
        out = servers.python(probe).split("\n")
        assert out[0] == "127.0.0.1 open" and out[1] == f"{ROUTABLE_IP} ConnectionRefusedError", (port, out)
    listening = subprocess.run(servers.cmd("ss", "-ltnH"), capture_output=True, text=True, check=True).stdout
    addresses = [line.split()[3] for line in listening.splitlines() if line.strip()]
    assert {f"127.0.0.1:{LS_PORT}", f"127.0.0.1:{MLFLOW_PORT}"} <= set(addresses), addresses
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
