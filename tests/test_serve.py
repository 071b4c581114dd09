"""The scoring service for real: `harness serve` deploys a cell's variant on the test cluster (Ray Serve, HTTP
on 127.0.0.1 inside the cluster's private network namespace), and a client in that namespace talks to it.

- Parity: NAB files replayed through the service, two streams per request, give the offline cell's scores
  within the record-by-record tolerance (tests/test_streaming.py) and the same NAB score to 1e-6, with one
  shard and with two.
- Bad requests get a 4xx with a JSON error naming the problem, and the next request is served.
- A shard replica killed mid-service is restarted by Serve; its streams start again (re-warming), and the
  status endpoint says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import NAB, REPO, RayCluster, needs_nab, ray_env, stop_group

PORT = 8100
URL = f"http://127.0.0.1:{PORT}/v1/score"
GAUSS = "windowedGaussian"
AE = "autoencoder.onnxruntime-fp32"  # the cell id of the learned variant below
PARITY_FILES = ["realKnownCause", "artificialWithAnomaly/art_daily_jumpsup.csv"]


def scenario(tmp: Path, shards: int) -> Path:
    path = tmp / f"serving-{shards}.yaml"
    path.write_text(f"""
name: serving-test
corpus: {{path: {NAB}}}
detectors:
  - type: windowedGaussian
  - type: autoencoder
    params: {{window: 8, hidden: 8, bottleneck: 3, epochs: 1}}
backends:
  - {{backend: onnxruntime, precision: fp32}}
serve: {{shards: {shards}, max_batch_size: 8, batch_wait_timeout_s: 0.002}}
""")
    return path


class Served:
    """`harness serve` running in the cluster's namespace until stopped."""

    def __init__(self, cluster: RayCluster, scenario_file: Path, cell: str, log: Path, *extra: str):
        self.cluster = cluster
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                cluster.cmd([sys.executable, "-m", "harness", "serve", str(scenario_file), "--cell", cell,
                             "--address", cluster.gcs_address, "--port", str(PORT), *extra]),
                stdout=out, stderr=subprocess.STDOUT, env=ray_env(), cwd=REPO, start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while f"at {URL}" not in log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"harness serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def client(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = self.cluster.run([sys.executable, "tests/serve_client.py", *args], timeout=timeout)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def status(self) -> dict:
        proc = self.cluster.run(["curl", "-sf", f"http://127.0.0.1:{PORT}/v1/status"], timeout=30)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def post(self, body: str) -> dict:
        """The JSON answer of one POST /v1/score from inside the namespace."""
        proc = self.cluster.run(["curl", "-s", "-X", "POST", "-H", "Content-Type: application/json", "-d", body, URL], timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        stop_group(self.proc)


def offline(cell_type: str, params: dict, backend: dict | None, only: list[str]) -> tuple[list, dict[str, np.ndarray]]:
    from harness.corpus.layout import load_corpus
    from harness.detectors import resolve_detector
    from harness.scoring.nab import probation_rows

    files = load_corpus(NAB, only=only).files
    out = {}
    for f in files:
        det = resolve_detector(cell_type)(**params)
        if backend:
            det.use_backend(backend)
        out[f.name] = det.score_file(f, probation_rows(f.n_rows))
    return files, out


def nab_standard(files, scores: dict[str, np.ndarray]) -> float:
    from harness.corpus.layout import load_corpus
    from harness.scoring.nab import score_detector
    from harness.scoring.profiles import load_profiles

    profiles = load_profiles(NAB / "config" / "profiles.json")
    windows = load_corpus(NAB, values=False).label_windows
    rep = score_detector(files, [scores[f.name] for f in files], "d", None, profiles, label_windows=windows)
    return rep.profiles["standard"].score


@needs_nab
@pytest.mark.parametrize("shards", [1, 2])
def test_replay_through_the_service_equals_the_offline_cell(ray_cluster: RayCluster, tmp_path: Path, shards: int) -> None:
    scen = scenario(tmp_path, shards)
    files, ref = offline("windowedGaussian", {}, None, PARITY_FILES)
    ae_files, ae_ref = offline("autoencoder", {"window": 8, "hidden": 8, "bottleneck": 3, "epochs": 1},
                               {"backend": "onnxruntime", "precision": "fp32"}, PARITY_FILES[1:])
    for cell, want, which, tol in [(GAUSS, ref, files, 1e-9), (AE, ae_ref, ae_files, 1e-5)]:
        served = Served(ray_cluster, scen, cell, tmp_path / f"serve-{cell}.log")
        try:
            out = tmp_path / f"{cell}-{shards}.npz"
            served.client("replay", URL, str(NAB), str(out), "--only", ",".join(PARITY_FILES if cell == GAUSS else PARITY_FILES[1:]),
                          "--encoding", "json" if shards == 1 else "msgpack")
            got = {k.replace("|", "/"): v for k, v in np.load(out).items()}
            status = served.status()
        finally:
            served.stop()
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=tol, err_msg=f"{cell} {name}")
        assert abs(nab_standard(which, got) - nab_standard(which, want)) <= 1e-6
        assert len(status["shards"]) == shards
        assert sum(s["streams"] for s in status["shards"]) == len(want)
        assert sum(s["events"] for s in status["shards"]) == sum(len(v) for v in want.values())
        if shards == 2 and cell == GAUSS:
            assert all(s["streams"] > 0 for s in status["shards"]), status  # the streams are spread


def test_bad_requests_are_refused_and_the_next_one_served(ray_cluster: RayCluster, tmp_path: Path) -> None:
    scen = tmp_path / "bad.yaml"
    scen.write_text("name: bad\ndetectors: [{type: windowedGaussian}]\nserve: {shards: 2}\n")
    served = Served(ray_cluster, scen, GAUSS, tmp_path / "serve.log")
    try:
        answers = json.loads(served.client("bad", URL).stdout)
        raws = json.loads(served.client("raw", URL).stdout)
        killed = _kill_a_shard(served)
        recovery = json.loads(served.client("until-ok", URL, "--timeout", "90").stdout)
        after = served.status()
        restarted_answer = served.post('{"events": [{"stream": "ok", "timestamp": 2, "value": 1}]}')
    finally:
        served.stop()
    for name, status, body, next_status in answers:
        assert 400 <= status < 500, (name, status, body)
        assert json.loads(body)["error"], (name, body)
        assert next_status == 200, f"after {name}: {next_status}"
    by_name = {a[0]: a for a in answers}
    assert by_name["oversize"][1] == 413 and by_name["unsupported type"][1] == 415
    assert "value" in json.loads(by_name["wrong type"][2])["error"]
    assert "empty" in json.loads(by_name["empty list"][2])["error"]
    expected = {"duplicate key": (400, "appears twice"), "year 1": (400, "1970-01-01"),
                "too many events": (413, "max_events_per_request"), "too many streams": (413, "max_streams_per_request"),
                "probation over the limit": (400, "max_probation"), "back in time": (409, "earlier than the stream's latest")}
    for name, (status, says) in expected.items():
        assert by_name[name][1] == status and says in json.loads(by_name[name][2])["error"], by_name[name]
    # requests no client library sends: refused with JSON too, the chunked one before it is read whole
    assert [r[:2] for r in raws] == [["negative length", 400], ["chunked oversize", 413]], raws
    assert all(r[2] == "application/json" and json.loads(r[3])["error"] for r in raws), raws
    # the restarted shard's stream starts again, and the answer says so
    assert restarted_answer["started"] == ["ok"] and restarted_answer["warming"] == {"ok": 750}, restarted_answer
    # the killed shard came back as a new process, its streams gone (they re-warm on their next events)
    restarted = next(s for s in after["shards"] if s["shard"] == killed["shard"])
    assert restarted["pid"] != killed["pid"] and restarted["started_at"] > killed["started_at"]
    assert recovery["seconds"] < 90


def _kill_a_shard(served: Served) -> dict:
    """SIGKILL the process of the shard that owns the stream "ok" (it has state); returns its status before."""
    from harness.serving.config import shard_of

    before = served.status()
    shard = next(s for s in before["shards"] if s["shard"] == shard_of("ok", len(before["shards"])))
    assert shard["streams"] >= 1
    os.kill(shard["pid"], signal.SIGKILL)
    return shard


def test_overload_is_shed_at_once_with_retry_after(ray_cluster: RayCluster, tmp_path: Path, monkeypatch) -> None:
    """A service whose shard takes 10 ms a request (userdet:Busy, 1 ms per event, 10 events), 4 requests at a
    time and 4 waiting their turn at the HTTP guard: 40 requests at once are all answered, the surplus at once
    with 503 + Retry-After and a JSON error, none left to time out; `harness load` at about 3x its capacity
    counts those as shed, not errors."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])))
    scen = tmp_path / "busy.yaml"
    scen.write_text("name: busy\ndetectors: [{type: 'userdet:Busy', params: {ms_per_event: 1.0}}]\n"
                    "serve: {max_ongoing_requests: 4, max_queued_requests: 4, max_batch_size: 4, retry_after_s: 2}\n")
    served = Served(ray_cluster, scen, "Busy", tmp_path / "serve.log")
    try:
        answers = json.loads(served.client("burst", URL, "--n", "40", "--events", "10").stdout)
        load = ray_cluster.run([sys.executable, "-m", "harness", "load", URL, "--json", "--events-per-request", "10",
                                "--rate", "300", "--duration", "3", "--warmup", "0.5", "--min-duration", "2"], timeout=120)
    finally:
        served.stop()
    statuses = [a[0] for a in answers]
    assert set(statuses) == {200, 503} and statuses.count(200) >= 8, statuses  # its 4 slots and 4 waiting
    for status, retry_after, body in answers:  # shed by the HTTP guard, which the first answer told what to admit
        if status == 503:
            assert retry_after == "2" and "at capacity" in json.loads(body)["error"], (retry_after, body)
    assert load.returncode in (0, 1) and load.stdout, load.stderr[-2000:]
    summary = json.loads(load.stdout)
    assert summary["shed"] > 0.3 * summary["answered"], summary  # ~2/3 of the offered load is more than it carries
    assert summary["errors"] == 0 and summary["requests"] > 0, summary  # nothing timed out or failed otherwise

