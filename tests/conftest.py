"""Shared fixtures. Ray runs only inside private network namespaces, so all its traffic is loopback and its
fixed ports never collide with anything else on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAB = REPO.parent / "shared" / "nab"
needs_nab = pytest.mark.skipif(not NAB.is_dir(), reason="NAB corpus not found at ../shared/nab")


def ray_env(**extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def can_isolate() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("ip") is not None


needs_netns = pytest.mark.skipif(not can_isolate(), reason="needs root, unshare and ip to keep Ray on a private loopback")


def private_net(cmd: list[str]) -> list[str]:
    """`cmd` in a fresh network namespace with only loopback up."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *cmd]


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


@dataclass
class RayCluster:
    netns: str
    gcs_address: str
    dashboard_url: str
    temp_dir: Path

    def cmd(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd]

    def run(self, cmd: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(cmd), capture_output=True, text=True, timeout=timeout, env=ray_env(), cwd=REPO, **kw)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> RayCluster:
    """A real `ray start --head` node in its own named network namespace, shared by the whole session."""
    if not can_isolate():
        pytest.skip("needs root, unshare and ip to keep Ray on a private loopback")
    ns = f"harness-test-{uuid.uuid4().hex[:8]}"
    temp_dir = Path(f"/tmp/rayt-{uuid.uuid4().hex[:6]}")  # Ray's socket paths must stay short
    subprocess.run(["ip", "netns", "add", ns], check=True)
    cluster = RayCluster(ns, "127.0.0.1:6379", "http://127.0.0.1:8265", temp_dir)
    try:
        subprocess.run(cluster.cmd(["ip", "link", "set", "lo", "up"]), check=True)
        started = cluster.run(
            [
                "ray", "start", "--head", "--port=6379", "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1", "--dashboard-port=8265", "--num-cpus=2",
                f"--temp-dir={temp_dir}", "--disable-usage-stats",
            ],
            timeout=120,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        yield cluster
    finally:
        cluster.run(["ray", "stop", "--force"], timeout=60)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """The quickstart's synthetic corpus on disk (seed 7, 4032 rows), as `harness run` materialises it."""
    from harness.corpus.synthetic import write_corpus

    return write_corpus(tmp_path_factory.mktemp("synth") / "corpus", 7, 4032)
