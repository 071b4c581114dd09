"""What a scoring service exposes, tried as an attacker would, on a host with a routable address (a network
namespace with a veth, 10.77.0.2, and a default route: conftest.routable_namespace).

- `harness serve` on a private Ray, exposed with `--host 0.0.0.0 --token-file`: every socket listening beyond
  loopback refuses an unauthenticated caller. Serve's replicas open a gRPC port on every interface that unpickles
  what it is sent; with the private Ray's token auth it answers UNAUTHENTICATED. The HTTP ports answer 401.
- The Ray token is a 0600 file in a 0700 folder, on no process's command line or environment, gone at exit.
- The API token: every endpoint answers 401 JSON without it or with a wrong one; `harness load --token-file`.
- Slow bodies (a byte a second) from more clients than the replica has slots leave a normal client served.
- A second `harness serve` on the same port, and one on a port another program holds: one line, exit 2.
- A load cell of `harness run`: the same probe while its service runs.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, ROUTABLE_IP, harness_cmd, needs_netns, one_error_line, ray_env, routable_namespace, stop_group

pytestmark = needs_netns

PORT = 8140
TOKEN = "exposure-test-token-0123456789abcdef"


def in_ns(ns: str, cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout,
                          env=ray_env(), cwd=REPO, **kw)


def probe(ns: str) -> list[dict]:
    """Every non-loopback listener of the namespace, called without credentials (tests/net_probe.py)."""
    proc = in_ns(ns, [sys.executable, "tests/net_probe.py", ROUTABLE_IP])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def cluster_environment(ns: str) -> tuple[list[str], dict[str, str]]:
    """The processes in the namespace, and the environment Ray's raylet was started with (the driver's own
    /proc/environ shows only what it was started with, not what it set before starting Ray)."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
    raylet = next(p for p in pids if Path(f"/proc/{p}/comm").read_text().strip() == "raylet")
    env = dict(e.split("=", 1) for e in Path(f"/proc/{raylet}/environ").read_bytes().decode().split("\0") if "=" in e)
    return pids, env


def refused(listener: dict) -> bool:
    return listener["grpc"] == "UNAUTHENTICATED" or listener["http"] == 401


def curl(ns: str, path: str, *args: str) -> tuple[int, dict, str]:
    """(status, JSON body, headers) of a request to the service from inside the namespace."""
    proc = in_ns(ns, ["curl", "-s", "-i", "--max-time", "30", *args, f"http://{ROUTABLE_IP}:{PORT}{path}"], timeout=60)
    head, _, body = proc.stdout.replace("\r\n", "\n").partition("\n\n")
    return int(head.split()[1]), json.loads(body), head.lower()


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """`harness serve` of windowedGaussian on a private Ray in a routable namespace, on every interface, with an
    API token: (namespace, process, token file, the process's stderr log)."""
    tmp = tmp_path_factory.mktemp("exposed")
    scenario = tmp / "s.yaml"
    scenario.write_text("name: exposed\ndetectors: [{type: windowedGaussian}]\nserve: {max_ongoing_requests: 8}\n")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    log = tmp / "serve.log"
    with routable_namespace("harness-exp") as ns:
        with open(log, "w") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *harness_cmd(
                "serve", str(scenario), "--cell", "windowedGaussian", "--host", "0.0.0.0", "--port", str(PORT),
                "--token-file", str(token_file))], stdout=out, stderr=subprocess.STDOUT, env=ray_env(), cwd=REPO,
                start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while "Ctrl-C stops" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
            yield ns, proc, token_file, log, scenario
        finally:
            stop_group(proc)


def test_every_exposed_socket_refuses_an_unauthenticated_caller(exposed) -> None:
    ns, *_ = exposed
    listeners = probe(ns)
    assert any(x["process"].startswith("ray::ServeRepli") and x["grpc"] == "UNAUTHENTICATED" for x in listeners), listeners
    assert any(x["listen"].endswith(f":{PORT}") and x["http"] == 401 for x in listeners), listeners  # the proxy
    assert all(refused(x) for x in listeners), [x for x in listeners if not refused(x)]


def test_the_private_rays_token_is_a_private_file(exposed) -> None:
    ns, proc, *_ = exposed
    pids, env = cluster_environment(ns)
    assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" not in env  # tests start it with auth disabled
    path = Path(env["RAY_AUTH_TOKEN_PATH"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text().strip()
    assert len(token) >= 32
    for pid in pids:  # every process of the cluster
        try:
            cmdline, environ = Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # gone meanwhile
        assert token.encode() not in cmdline and token.encode() not in environ, pid


def test_every_endpoint_needs_the_api_token(exposed) -> None:
    ns, _, token_file, _, _ = exposed
    body = '{"events": [{"stream": "s", "timestamp": 1700000000, "value": 1.0}]}'
    for path, args in [("/v1/status", []), ("/v1/score", ["-X", "POST", "-H", "Content-Type: application/json", "-d", body]),
                       ("/nowhere", [])]:
        status, answer, head = curl(ns, path, *args)
        assert status == 401 and "token" in answer["error"] and "www-authenticate: bearer" in head, (path, answer)
        status, _, _ = curl(ns, path, "-H", "Authorization: Bearer not-the-token-at-all-0000", *args)
        assert status == 401, path
    status, answer, _ = curl(ns, "/v1/score", "-H", f"Authorization: Bearer {TOKEN}", "-X", "POST", "-H",
                             "Content-Type: application/json", "-d", body)
    assert status == 200 and answer["scores"] == [0.0] and answer["started"] == ["s"], answer
    url = f"http://{ROUTABLE_IP}:{PORT}"
    load = in_ns(ns, harness_cmd("load", url, "--events-per-request", "50", "--rate", "5", "--duration", "2",
                                 "--warmup", "0.5", "--min-duration", "1", "--streams", "2", "--token-file", str(token_file), "--json"))
    assert load.returncode in (0, 1) and json.loads(load.stdout)["requests"] > 0, load.stderr[-2000:]
    refused_load = in_ns(ns, harness_cmd("load", url, "--events-per-request", "50", "--rate", "5", "--duration", "2"))
    assert refused_load.returncode == 1 and "HTTP 401" in refused_load.stderr, refused_load.stderr[-2000:]


def test_slow_bodies_do_not_lock_out_other_clients(exposed) -> None:
    """40 clients with the token (slow, not unauthorised) that send a body a byte a second, more than the
    replica's 8 request slots: Serve hands a request to a replica before its body, so without the HTTP guard they
    fill its slots and the normal client times out; with it, the bodies wait in the proxy."""
    ns, *_ = exposed
    proc = in_ns(ns, [sys.executable, "tests/serve_client.py", "trickle", f"http://{ROUTABLE_IP}:{PORT}/v1/score",
                      "--connections", "40", "--seconds", "4", "--token", TOKEN])
    assert proc.returncode == 0, proc.stderr[-2000:]
    trickled = json.loads(proc.stdout)
    assert len(trickled["statuses"]) >= 10 and set(trickled["statuses"]) == {200}, trickled


def test_a_second_service_on_a_busy_port_is_one_line(exposed) -> None:
    ns, _, token_file, _, scenario = exposed
    again = in_ns(ns, harness_cmd("serve", str(scenario), "--cell", "windowedGaussian", "--host", "0.0.0.0",
                                  "--port", str(PORT), "--token-file", str(token_file)), timeout=60)
    assert "--port" in one_error_line(again) and "already in use" in again.stderr
    holder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", "8141", "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(1.0)
        other = in_ns(ns, harness_cmd("serve", str(scenario), "--cell", "windowedGaussian", "--port", "8141"), timeout=60)
        assert "127.0.0.1:8141 is already in use" in one_error_line(other)
    finally:
        stop_group(holder)
    exposed_without_token = in_ns(ns, harness_cmd("serve", str(scenario), "--cell", "windowedGaussian", "--host", "0.0.0.0"))
    assert "--no-auth" in one_error_line(exposed_without_token)


def test_stopping_removes_the_token_and_every_ray_process(exposed) -> None:
    """Runs last in this module: it stops the fixture's service."""
    ns, proc, *_ = exposed
    folder = Path(cluster_environment(ns)[1]["RAY_AUTH_TOKEN_PATH"]).parent
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    assert proc.wait(timeout=60) == 0
    assert not folder.exists()
    left = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in left]


def test_a_load_cell_exposes_nothing_unauthenticated(tmp_path: Path) -> None:
    scenario = tmp_path / "load.yaml"
    scenario.write_text("""
name: exposure-load
corpus: {synthetic: {seed: 3, rows: 1500}}
detectors: [{type: windowedGaussian, params: {window: 100}}]
load: {paths: [http], rates: [10], events_per_request: 100, streams: 2, duration_s: 6, warmup_s: 1,
       rules: {min_duration_s: 2, min_requests: 10}}
""")
    with routable_namespace("harness-exl") as ns:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *harness_cmd("run", str(scenario), "--out", str(tmp_path / "run"))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ray_env(), cwd=REPO)
        try:
            deadline, listeners = time.monotonic() + 240, []
            while not any(x["process"].startswith("ray::ServeRepli") for x in listeners):
                assert proc.poll() is None and time.monotonic() < deadline, "the load cell's replica never listened"
                time.sleep(0.5)
                listeners = probe(ns)
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            proc.kill()
    assert all(refused(x) for x in listeners), [x for x in listeners if not refused(x)]
    assert proc.returncode == 0, stderr[-3000:]
