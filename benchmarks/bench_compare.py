"""Does `harness compare` stay silent on noise and speak up on a regression? Prints figures, asserts nothing.

1. K runs of the quickstart (scenarios/quickstart.yaml: an autoencoder timed in torch fp32, ONNX Runtime fp32 and
   INT8, the INT8 build served and loaded), its timing lengthened to `--rounds` rounds of `--min-duration` seconds
   so that its timings are long enough to judge (the shipped 2 x 0.2 s are reported "too noisy to judge"), one
   after the other on this machine, HARNESS_HISTORY a throwaway store in the work folder. Each run is compared
   with the next (K - 1 same-code pairs): every regression reported is a false alarm.
   Three ways: each pair alone (each run's own rounds); with a store of the runs up to A (what a nightly job
   knows: its run-to-run spread counts as noise from 3 runs on); with the store of every run (B left out).
2. Planted changes in copies of the first run, compared with it: every timing slower (each round's median, the
   percentiles, events/s; 10% fewer events/s, and each call 10% longer), and its NAB standard score 0.5 point
   lower. The exit status and the figures flagged are printed.

    python benchmarks/bench_compare.py [--runs 11] [--rounds 5] [--min-duration 0.3] [--keep DIR]
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
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run(scenario: Path, out: Path, history: Path) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(scenario), "--out", str(out)], capture_output=True, text=True,
                          check=False, env={**os.environ, "HARNESS_HISTORY": str(history)})
    if proc.returncode != 0:
        raise SystemExit(f"run failed: {proc.stderr[-2000:]}")
    return time.monotonic() - t0


def compare(a: Path, b: Path, history: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness", "compare", str(a), str(b), "--json", "--all", "--history", str(history), *extra],
                          capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr)
    return {**json.loads(proc.stdout), "exit": proc.returncode}


def index(runs: list[Path], store: Path) -> Path:
    """A fresh store holding `runs` only."""
    store.unlink(missing_ok=True)
    for r in runs:
        subprocess.run([sys.executable, "-m", "harness", "history", "index", str(r), "--history", str(store)], check=True, capture_output=True)
    return store


def plant(run_dir: Path, out: Path, slower: float = 1.0, nab_shift: float = 0.0) -> Path:
    """A copy of `run_dir` with every timing `slower` times slower, and every cell's NAB standard score shifted."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(run_dir, out)
    for path in (out / "cells").glob("*/result.json"):
        data = json.loads(path.read_text())
        timing = data["tasks"].get("timing")
        if timing and slower != 1.0:
            for batch in ("batch1", "batchN"):
                fig = timing["result"][batch]
                fig["events_per_s"] /= slower
                fig["rounds_p50_ms"] = [x * slower for x in fig["rounds_p50_ms"]]
                for key in ("mean_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"):
                    fig[key] *= slower
        if nab_shift and data["tasks"].get("score"):
            data["tasks"]["score"]["result"]["nab"]["profiles"]["standard"]["score"] += nab_shift
        path.write_text(json.dumps(data))
    return out


def failing(report: dict) -> list[tuple[str, str, float]]:
    return [(v["cell"], v["metric"], round(v["delta_pct"] or 0.0, 1)) for v in report["verdicts"] if v["fails"]]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=11)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-duration", type=float, default=0.3)
    p.add_argument("--keep", help="keep the run folders (and the store) here; runs already there are reused")
    args = p.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    history = work / "history.sqlite"
    scenario = yaml.safe_load((REPO / "scenarios" / "quickstart.yaml").read_text())
    scenario["timing"] = {"rounds": args.rounds, "min_duration_s": args.min_duration}
    (work / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    runs = []
    for k in range(args.runs):
        out = work / f"run-{k:02d}"
        if not out.exists():
            print(f"run {k}: {run(work / 'scenario.yaml', out, history):.0f} s", flush=True)
        runs.append(out)
    stores = {"no history": lambda k: work / "none.sqlite",  # each pair alone: each run's own rounds
              "the runs before B": lambda k: index(runs[: k + 1], work / "past.sqlite"),  # what a nightly job knows
              "every run": lambda k: history}  # the store the runs filled (B itself left out by compare)
    for label, store in stores.items():
        false_alarms, alarmed, noisy = 0, 0, set()
        for k, (a, b) in enumerate(itertools.pairwise(runs)):
            report = compare(a, b, store(k))
            bad = failing(report)
            false_alarms += len(bad)
            alarmed += bool(bad)
            noisy |= {v["metric"].partition("[")[0] for v in report["verdicts"] if v["verdict"] == "too noisy"}
            moves = [abs(v["delta_pct"]) for v in report["verdicts"] if v["delta_pct"] is not None and v["verdict"] != "too noisy"]
            print(f"  {label}: {a.name} vs {b.name}: largest judged move {max(moves, default=0.0):.1f}%; false alarms: {bad or 'none'}",
                  flush=True)
        print(f"same code, {label}: {false_alarms} false regression(s) in {alarmed} of {len(runs) - 1} pairs; too noisy to judge: "
              f"{sorted(noisy)}", flush=True)
        last = store(len(runs) - 2)
        for name, slower in (("10% fewer events/s (each call 11.1% longer)", 1 / 0.9), ("each call 10% longer", 1.10)):
            report = compare(runs[0], plant(runs[0], work / "planted-slow", slower=slower), last)
            print(f"planted slowdown, {name}, {label}: exit {report['exit']}, flagged {sorted(set(failing(report)))}", flush=True)
        report = compare(runs[0], plant(runs[0], work / "planted-nab", nab_shift=-0.5), last)
        print(f"planted 0.5-point NAB drop, {label}: exit {report['exit']}, flagged {failing(report)}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
