"""Does `harness compare` stay silent on noise and speak up on a regression? Prints figures, asserts nothing.

1. K runs of one small scenario (a learned detector on ONNX Runtime fp32, so throughput and latency are timed,
   and windowedGaussian; a private Ray on 127.0.0.1), one after the other on this machine, compared pairwise:
   every regression reported between them is a false alarm. Twice: with each run's own spread only, and with
   the K runs in a history store, whose run-to-run spread then counts as noise too.
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
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(scenario), "--out", str(out)], capture_output=True, text=True, check=False,
                          env={**os.environ, "HARNESS_HISTORY": "off"})
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr[-2000:]}")


def compare(a: Path, b: Path, history: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness", "compare", str(a), str(b), "--json", "--history", str(history)],
                          capture_output=True, text=True, check=False)
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
    history = work / "history.sqlite"
    history.unlink(missing_ok=True)
    for label, store in (("each run's own spread", work / "none.sqlite"), ("with the runs' history", history)):
        if store == history:
            for r in runs:
                subprocess.run([sys.executable, "-m", "harness", "history", "index", str(r), "--history", str(history)],
                               check=True, capture_output=True)
        false_alarms, pairs, pairs_alarmed = 0, 0, 0
        for a, b in itertools.combinations(runs, 2):
            report = compare(a, b, store)
            pairs += 1
            regressed = [v for v in report["verdicts"] if v["fails"]]  # regressed, or a deterministic figure changed
            false_alarms += len(regressed)
            pairs_alarmed += bool(regressed)
            worst = max((abs(v["delta_pct"] or 0) for v in report["verdicts"]), default=0.0)
            print(f"  {label}: {a.name} vs {b.name}: largest move {worst:.1f}%; false alarms: "
                  f"{[(v['cell'], v['metric'], round(v['delta_pct'], 1)) for v in regressed] or 'none'}")
        print(f"same code, same machine, {label}: {false_alarms} false regression(s) in {pairs_alarmed} of {pairs} pairs of {len(runs)} runs")
        slow = compare(runs[0], plant(runs[0], work / "planted-slow", throughput=0.8), store)
        flagged = sorted({v["metric"] for v in slow["verdicts"] if v["fails"]})
        print(f"planted 20% throughput drop, {label}: {'flagged' if 'throughput_eps' in flagged else 'MISSED'} ({', '.join(flagged) or 'nothing'})")
        nab = compare(runs[0], plant(runs[0], work / "planted-nab", nab_shift=-0.1), store)
        flagged = sorted({v["metric"] for v in nab["verdicts"] if v["fails"]})
        print(f"planted NAB score change (-0.1), {label}: {'flagged' if 'nab_standard' in flagged else 'MISSED'} ({', '.join(flagged)})")
        for planted in ("planted-slow", "planted-nab"):
            shutil.rmtree(work / planted)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
