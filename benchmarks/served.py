"""`harness serve` as the serving benchmarks run it: started in its own session, ready once it says so, stopped
with Ctrl-C as in a terminal (then killed if it does not stop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start(args: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None,
          timeout_s: float = 180) -> subprocess.Popen:
    """`python -m harness serve ARGS`, its output in `log`; exits the benchmark with the log's tail if it never
    says it serves."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "harness", "serve", *args], stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while "Ctrl-C stops" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"harness serve did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)
    return proc


def stop(proc: subprocess.Popen, timeout_s: float = 60) -> float:
    """Ctrl-C to the service's session; the seconds until it has exited."""
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.monotonic() - t0
