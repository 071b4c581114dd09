"""Shared fixtures. Ray runs only inside private network namespaces, so all its traffic is loopback and its
fixed ports never collide with anything else on the machine; every Ray process a test starts is stopped by its
process group (never `ray stop`, which would stop every Ray on the machine, a user's own included).

Requirements: tests marked `needs_nab` read NAB's corpus (`$HARNESS_NAB`, else ../shared/nab); tests marked
`needs_nab_results(detector, ...)` also read those published detectors' raw outputs under its results/ (what
`harness nab fetch` fetches by default: numenta, twitterADVec, windowedGaussian, null); tests marked `needs_netns`
(and the cluster fixtures) need root, `unshare` and `ip`; tests marked `needs_shellcheck` need `shellcheck` on PATH
(`apt-get install shellcheck`); tests marked `needs_prometheus` (and tests/chaos/prom.py) need Debian's `prometheus`
package (`prometheus`, `promtool`). Without them a test is skipped with the reason, except
with CI=true, where it fails: a green CI must never hide the NAB or the Ray path.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
NAB = Path(os.environ.get("HARNESS_NAB") or REPO.parent / "shared" / "nab")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

needs_nab = pytest.mark.needs_nab


def needs_nab_results(*detectors: str) -> pytest.MarkDecorator:
    """The test reads NAB's corpus and the raw outputs of these published detectors (NAB's results layout)."""
    return pytest.mark.needs_nab_results(*detectors)


def nab_missing(detectors: tuple[str, ...] = ()) -> str | None:
    """What of NAB a test needs is missing under NAB, in words (None: all there). Only whether files exist:
    `harness nab fetch` verified their hashes, and stat-ing ~300 files keeps this cheap for every test."""
    from harness.corpus.fetch import files_for

    if not (NAB / "labels" / "combined_windows.json").is_file():
        return (f"NAB corpus not found at {NAB} (no labels/combined_windows.json; set HARNESS_NAB to a folder "
                "fetched with `harness nab fetch`)")
    files = files_for(tuple(detectors))
    lacking = [d for d in dict.fromkeys(detectors)
               if not all((NAB / rel).is_file() for rel in files if rel.startswith(f"results/{d}/"))]
    if lacking:
        return (f"NAB at {NAB} lacks the raw outputs of {', '.join(lacking)} under results/ (fetch a corpus "
                f"with them: `harness nab fetch DEST --detectors {','.join(lacking)}`)")
    return None


needs_netns = pytest.mark.needs_netns
needs_shellcheck = pytest.mark.needs_shellcheck
needs_prometheus = pytest.mark.needs_prometheus


def can_isolate() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip") is not None


REQUIREMENTS = {
    "needs_netns": (can_isolate, "needs root, unshare and ip to keep Ray on a private loopback"),
    "needs_shellcheck": (lambda: shutil.which("shellcheck") is not None, "shellcheck not on PATH (apt-get install shellcheck)"),
    "needs_prometheus": (lambda: all(shutil.which(t) for t in ("prometheus", "promtool", "prometheus-node-exporter")),
                         "prometheus, promtool or prometheus-node-exporter not on PATH "
                         "(apt-get install prometheus prometheus-node-exporter)"),
}


def require(met: bool, reason: str) -> None:
    """Skip without the requirement, or fail under CI=true."""
    if not met:
        if IN_CI:
            pytest.fail(f"CI=true: required, not skipped: {reason}", pytrace=False)
        pytest.skip(reason)


def pytest_configure(config) -> None:
    import tempfile

    # runs index themselves into the history store: in tests, a throwaway one, never the checkout's results/
    os.environ.setdefault("HARNESS_HISTORY", str(Path(tempfile.mkdtemp(prefix="harness-history-")) / "history.sqlite"))
    for name, (_, reason) in REQUIREMENTS.items():
        config.addinivalue_line("markers", f"{name}: {reason}")
    config.addinivalue_line("markers", f"needs_nab: NAB's corpus (data, labels, config) at {NAB}")
    config.addinivalue_line("markers", "needs_nab_results(detector, ...): NAB's corpus and these published "
                            "detectors' raw outputs under its results/")
    config.addinivalue_line("markers", "quiet: needs the machine to itself (the edge topology's one core must meet its "
                            "SLO before a fault is made): the README's test command runs these after the rest, alone")


def pytest_runtest_setup(item) -> None:
    for name, (met, reason) in REQUIREMENTS.items():
        if item.get_closest_marker(name) is not None:
            require(met(), reason)
    marks = [*item.iter_markers("needs_nab"), *item.iter_markers("needs_nab_results")]
    if marks:
        missing = nab_missing(tuple(d for mark in marks for d in mark.args))
        require(missing is None, missing or "")


def ray_env(**extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def private_net(cmd: list[str]) -> list[str]:
    """`cmd` in a fresh network namespace with only loopback up (the same PID: sh execs it)."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *cmd]


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a process we started in its own session, and everything it started: SIGTERM to its group, then
    SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def kill_stragglers(marker: str) -> None:
    """Any process whose command line names `marker` (a private temp dir): none should be left, but a process
    that left its group must not outlive the tests."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            try:
                p.kill()
            except psutil.Error:
                pass


ROUTABLE_IP = "10.77.0.2"  # a routable namespace's own address (routable_namespace)


@contextmanager
def routable_namespace(prefix: str) -> Iterator[str]:
    """A named network namespace that looks like a host on a network: loopback up, a veth with ROUTABLE_IP/24 and
    a default route, so whatever binds every interface there is reachable beyond loopback. Yields its name."""
    require(can_isolate(), REQUIREMENTS["needs_netns"][1])
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        setup = (f"ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add {ROUTABLE_IP}/24 dev v0 && "
                 "ip link set v0 up && ip link set v1 up && ip route add default via 10.77.0.1")
        subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", setup], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@dataclass
class RayCluster:
    """A real Ray cluster in its own named network namespace: a head node, and worker nodes added on demand."""

    netns: str
    gcs_address: str
    dashboard_url: str
    temp_dir: Path
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def cmd(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd]

    def run(self, cmd: list[str], timeout: float = 300, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(cmd), capture_output=True, text=True, timeout=timeout, env=ray_env(**(env or {})), cwd=REPO, **kw)

    def start_node(self, *args: str, env: dict[str, str] | None = None, wrapper: list[str] = ()) -> subprocess.Popen:
        """`ray start ... --block` in its own session (so it can be stopped by process group); returns once it
        says the node runs. `env`: more environment for the node's processes; `wrapper`: a command (in the
        namespace) that execs the rest. Ray gives a node 30 s (hard-coded) to register with the GCS; on a busy
        machine (the suite's parallel workers) that can run out, so such a start is tried once more."""
        for attempt in range(2):
            proc, log = self._start(args, env, wrapper)
            if "Ray runtime started" in log or attempt or "timed out during startup" not in log:
                break
            self.stop_node(proc)
        if "Ray runtime started" not in log:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{log[-3000:]}")
        return proc

    def _start(self, args: tuple[str, ...], env: dict[str, str] | None, wrapper: list[str]) -> tuple[subprocess.Popen, str]:
        """One `ray start`, and its log once it says it runs, ends, or 120 s pass."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        log = self.temp_dir / f"ray-start-{len(self.nodes)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                self.cmd([*wrapper, "ray", "start", "--block", "--disable-usage-stats", *args]),
                stdout=out, stderr=subprocess.STDOUT, env=ray_env(**(env or {})), start_new_session=True,
            )
        self.nodes.append(proc)
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        return proc, log.read_text()

    def stop_node(self, proc: subprocess.Popen) -> None:
        stop_group(proc)
        self.nodes.remove(proc)


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    """A real `ray start --head` node (2 CPUs, labelled tier=cloud) in its own named network namespace, shared by
    the whole session, stopped by process group at the end."""
    require(can_isolate(), REQUIREMENTS["needs_netns"][1])
    ns = f"harness-test-{uuid.uuid4().hex[:8]}"
    temp_dir = Path(f"/tmp/rayt-{uuid.uuid4().hex[:6]}")  # Ray's socket paths must stay short
    subprocess.run(["ip", "netns", "add", ns], check=True)
    cluster = RayCluster(ns, "127.0.0.1:6379", "http://127.0.0.1:8265", temp_dir)
    try:
        subprocess.run(cluster.cmd(["ip", "link", "set", "lo", "up"]), check=True)
        cluster.start_node(
            "--head", "--port=6379", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            "--dashboard-port=8265", "--num-cpus=2", "--labels=tier=cloud", f"--temp-dir={temp_dir}",
            "--metrics-export-port=8080",  # Ray's dashboard lists it in <temp_dir>/prom_metrics_service_discovery.json
            env={"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "harness.serving.http_guard:middlewares",  # as clusters/ do
                 # metrics reported every second, not Ray's 10: Prometheus in a test sees a change within seconds
                 "RAY_metrics_report_interval_ms": "1000"},
        )
        yield cluster
    finally:
        for proc in reversed(list(cluster.nodes)):
            cluster.stop_node(proc)
        kill_stragglers(str(temp_dir))
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(temp_dir, ignore_errors=True)


# --- the CLI as a user runs it ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for CLI subprocesses: importing `ray` fails loudly, caches stay in a temporary folder."""
    guard = tmp_path_factory.mktemp("noray")
    (guard / "ray").mkdir()
    (guard / "ray" / "__init__.py").write_text('raise ImportError("tests: Ray must not be imported here")\n')
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(guard), env.get("PYTHONPATH", "")) if p)
    env["HARNESS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def harness(env: dict[str, str], *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Exit status 2 and exactly one line on stderr, no traceback; returns that line."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].strip(), "the error line is blank"
    return lines[0]


def write_nab(root: Path) -> Path:
    """A tiny corpus in NAB's layout: one file of 5 rows, one labelled window."""
    (root / "data" / "cat").mkdir(parents=True)
    rows = ["timestamp,value"] + [f"2026-01-01 00:{5 * i:02d}:00,{v}" for i, v in enumerate([1.0, 2.0, 1.5, 9.0, 1.0])]
    (root / "data" / "cat" / "f.csv").write_text("\n".join(rows) + "\n")
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(
        json.dumps({"cat/f.csv": [["2026-01-01 00:10:00.000000", "2026-01-01 00:15:00.000000"]]})
    )
    return root


def snapshot(folder: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under `folder` with its bytes (None for folders) and mtime: 'untouched' means equal."""
    out = {".": (None, folder.stat().st_mtime_ns)}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
    return out


def run_scenario(tmp_path_factory, name: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`harness run scenarios/<name>.yaml` on a private local Ray (no --address): the process and its folder."""
    require(can_isolate(), REQUIREMENTS["needs_netns"][1])
    out = tmp_path_factory.mktemp(name) / "run"
    proc = subprocess.run(
        private_net(harness_cmd("run", f"scenarios/{name}.yaml", "--out", str(out))),
        cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The README's quickstart (scoring, fp32 against INT8, the INT8 build served), run once per test process:
    test_report_html checks its report."""
    return run_scenario(tmp_path_factory, "quickstart")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """The quickstart's synthetic corpus on disk (seed 7, 4032 rows), as `harness run` materialises it."""
    from harness.corpus.synthetic import write_corpus

    return write_corpus(tmp_path_factory.mktemp("synth") / "corpus", 7, 4032)
