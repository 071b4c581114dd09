"""Does `harness compare` stay silent on noise and speak up on a regression? Prints figures, asserts nothing.

1. K runs of one small scenario (a learned detector on ONNX Runtime fp32, so throughput and latency are timed,
   and windowedGaussian; a private Ray on 127.0.0.1), one after the other on this machine, compared pairwise:
   every regression reported between them is a false alarm.
2. Two planted changes in a copy of the first run: its throughput cut by 20% (latencies raised to match), and
   its NAB score moved by 0.1 point. Both must be flagged.

    python benchmarks/bench_compare.py [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENARIO = """
name: compare-noise
corpus: {synthetic: {seed: 7, rows: 1500}}
detectors:
  - type: windowedGaussian
  - type: autoencoder
    params: {epochs: 2}
backends:
  - {backend: onnxruntime, precision: fp32}
"""


def run(scenario: Path, out: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(scenario), "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "HARNESS_HISTORY": "off"})
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr[-2000:]}")


def compare(a: Path, b: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness", "compare", str(a), str(b), "--json"], capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout)


def plant(run_dir: Path, out: Path, throughput: float = 1.0, nab_shift: float = 0.0) -> Path:
    """A copy of `run_dir` with the backend cell's throughput scaled (latencies inversely) and its NAB shifted."""
    shutil.copytree(run_dir, out)
    for path in (out / "cells").glob("*/result.json"):
        data = json.loads(path.read_text())
        timing = data["tasks"].get("timing")
        if timing:
            for batch in ("batch1", "batchN"):
                fig = timing["result"][batch]
                fig["events_per_s"] *= throughput
                for key in ("mean_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"):
                    fig[key] /= throughput
            for profile in data["tasks"]["score"]["result"]["nab"]["profiles"].values():
                profile["score"] += nab_shift
        path.write_text(json.dumps(data))
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--keep", help="keep the run folders here")
    args = p.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    scenario = work / "scenario.yaml"
    scenario.write_text(SCENARIO)
    runs = []
    for k in range(args.runs):
        out = work / f"run-{k}"
        if not out.exists():
            run(scenario, out)
        runs.append(out)
        print(f"run {k}: {out}", flush=True)
    false_alarms, pairs = 0, 0
    for a, b in itertools.combinations(runs, 2):
        report = compare(a, b)
        pairs += 1
        moved = [v for v in report["verdicts"] if v["verdict"] not in ("same",)]
        false_alarms += report["regressions"]
        worst = max((abs(v["delta_pct"] or 0) for v in moved), default=0.0)
        print(f"{a.name} vs {b.name}: {report['regressions']} regressions; {len(moved)} figures moved (largest {worst:.1f}%), "
              f"all within noise or threshold" if not report["regressions"] else
              f"{a.name} vs {b.name}: FALSE ALARM {[(v['cell'], v['metric'], round(v['delta_pct'], 1)) for v in report['regressions']]}")
    print(f"same code, same machine: {false_alarms} false regression(s) over {pairs} pairs of {len(runs)} runs")
    slow = compare(runs[0], plant(runs[0], work / "planted-slow", throughput=0.8))
    flagged = sorted({v["metric"] for v in slow["regressions"]})
    print(f"planted 20% throughput drop: {'flagged' if 'throughput_eps' in flagged else 'MISSED'} ({', '.join(flagged)})")
    nab = compare(runs[0], plant(runs[0], work / "planted-nab", nab_shift=-0.1))
    flagged = sorted({v["metric"] for v in nab["regressions"]})
    print(f"planted NAB score change (-0.1): {'flagged' if 'nab_standard' in flagged else 'MISSED'} ({', '.join(flagged)})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
