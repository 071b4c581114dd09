"""CLI latency and quickstart wall time: prints figures, asserts nothing.

- `harness --help` and `harness validate scenarios/quickstart.yaml`: median wall of --repeat runs (target < 1 s;
  neither imports ray, torch or pandas).
- `harness run scenarios/quickstart.yaml`: wall time of one whole process, local Ray start and stop included
  (target <= 60 s). As root it runs in a private network namespace, as the tests do; `--no-netns` runs it as is.
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
            seconds = wall([*prefix, *harness, "run", "scenarios/quickstart.yaml", "--out", f"{tmp}/run"], env)
        print(f"harness run scenarios/quickstart.yaml: {seconds:.1f} s wall, Ray start/stop included"
              f"{' (private network namespace)' if isolate else ''}")


if __name__ == "__main__":
    main()
