"""CLI latency and quickstart wall time: prints figures, asserts nothing.

- `harness --help` and `harness validate scenarios/quickstart.yaml`: median wall of --repeat runs (target < 1 s;
  neither imports ray, torch or pandas).
- `harness run scenarios/quickstart.yaml`: wall time of one whole process, local Ray and Serve start and stop
  included (target < 60 s), with the machine's load average before and after (the figure is only as quiet as the
  machine). `--fresh-cache` gives each run an empty HARNESS_CACHE, as a first run after `pip install` has (the
  corpus is generated and every model exported again). As root it runs in a private network namespace, as the
  tests do (Serve's port 8000 is then its own); `--no-netns` runs it as is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--runs", type=int, default=1, help="quickstart runs")
    ap.add_argument("--no-netns", action="store_true")
    ap.add_argument("--fresh-cache", action="store_true", help="an empty HARNESS_CACHE for each quickstart run")
    args = ap.parse_args()
    harness = [sys.executable, "-m", "harness"]
    for label, cmd in (("harness --help", [*harness, "--help"]),
                       ("harness validate scenarios/quickstart.yaml", [*harness, "validate", "scenarios/quickstart.yaml"])):
        times = [wall(cmd) for _ in range(args.repeat)]
        print(f"{label}: median {statistics.median(times):.3f} s, max {max(times):.3f} s over {args.repeat}")

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    isolate = not args.no_netns and os.geteuid() == 0 and shutil.which("unshare")
    prefix = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"'] if isolate else []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            run_env = {**env, "HARNESS_CACHE": f"{tmp}/cache"} if args.fresh_cache else env
            before = os.getloadavg()[0]
            seconds = wall([*prefix, *harness, "run", "scenarios/quickstart.yaml", "--out", f"{tmp}/run"], run_env)
        print(f"harness run scenarios/quickstart.yaml: {seconds:.1f} s wall, Ray and Serve start/stop included"
              f"{', fresh cache' if args.fresh_cache else ''}{' (private network namespace)' if isolate else ''}; "
              f"load average {before:.1f} before, {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
