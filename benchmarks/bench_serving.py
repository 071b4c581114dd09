"""Serving figures on this machine (docs/load.md): prints them, asserts nothing.

1. The peak rate at p95 <= 100 ms, VALID, over HTTP: `harness serve` (one deployment, a private Ray on 127.0.0.1)
   loaded by `harness load --find-peak`: windowedGaussian with 1,000-event JSON and 10,000-event msgpack
   requests, and the autoencoder on ONNX Runtime fp32 with 10,000-event msgpack requests (its streams trained
   first by a closed-loop run, so the search measures scoring, not training); and the null detector, whose
   peak is the request path's own ceiling (HTTP, Serve, decoding; no scoring).
2. Fidelity: `harness load` and hey (if installed: apt install hey) on the same endpoint, closed loop, same
   concurrency and body size; achieved rate and p95 side by side. `--wrk-only`: only wrk's closed-loop figures
   (apt install wrk), the same client for any two versions (`--code`).
3. A load cell with a 30 s measured window: `harness run`'s wall time for it, deployment and warm-up included.

Everything listens on 127.0.0.1 only and every run is bounded. Run from the repository root:
    python benchmarks/bench_serving.py [--port 8123] [--skip-cell] [--code DIR]

`--code DIR` runs the service and `harness load` from another checkout (e.g. `git worktree add /tmp/before REV`),
so a change's cost to the peak is measured on the same machine in the same session.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import served  # benchmarks/served.py

REPO = Path(__file__).resolve().parents[1]
CODE = REPO  # the checkout whose service and load generator run (--code)
CELL = "windowedGaussian.window-288"
LEARNED = ("scenarios/serving.yaml", "autoencoder.onnxruntime-fp32")


def code_env() -> dict[str, str]:
    """The environment that makes `python -m harness` (and Ray's workers) import CODE's harness."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CODE), os.environ.get("PYTHONPATH")]))}


def harness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=CODE, env=code_env())


def serve(port: int, log: Path, scenario: str = "scenarios/baselines.yaml", cell: str = CELL) -> subprocess.Popen:
    return served.start([scenario, "--cell", cell, "--port", str(port)], log, CODE, code_env(), timeout_s=120)


def stop(proc: subprocess.Popen) -> None:
    served.stop(proc, timeout_s=30)


def peak(url: str, events: int, encoding: str, start: float) -> None:
    r = harness("load", url, "--events-per-request", str(events), "--encoding", encoding, "--rate", str(start),
                "--duration", "10", "--warmup", "2", "--find-peak", "--slo-p95-ms", "100", "--json")
    p = json.loads(r.stdout)
    s = p["summary"]
    if s is None:
        print(f"  {encoding:8} {events:>6} events/request: no rate passed ({[x['rps'] for x in p['probes']]})")
        return
    print(f"  {encoding:8} {events:>6} events/request: peak {p['peak_rps']:g} req/s = {s['achieved_eps']:,.0f} events/s, "
          f"p95 {s['latency_ms']['p95']:.1f} ms, VALID {s['valid']} (probes {[x['rps'] for x in p['probes']]})")


def fidelity(url: str, concurrency: int, seconds: int) -> None:
    from harness.load.payload import request_bodies, synthetic_streams

    body = Path(tempfile.mkdtemp()) / "body.json"
    body.write_bytes(request_bodies(synthetic_streams(8), 1000, "json")[3][0])
    for attempt in range(2):
        r = harness("load", url, "--events-per-request", "1000", "--concurrency", str(concurrency),
                    "--duration", str(seconds), "--warmup", "2", "--json")
        ours = json.loads(r.stdout)
        h = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json",
                            "-D", str(body), url.rstrip("/") + "/v1/score"], capture_output=True, text=True, timeout=seconds + 60).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", h).group(1))
        p95 = 1000 * float(re.search(r"95% in ([\d.]+) secs", h).group(1))
        print(f"  run {attempt + 1}: harness load {ours['achieved_rps']:.1f} req/s p95 {ours['latency_ms']['p95']:.1f} ms | "
              f"hey {rps:.1f} req/s p95 {p95:.1f} ms | rate {100 * (ours['achieved_rps'] / rps - 1):+.1f}%, "
              f"p95 {100 * (ours['latency_ms']['p95'] / p95 - 1):+.1f}%")


def wrk_closed_loop(url: str, seconds: int = 12) -> None:
    """An independent client (wrk, closed loop) with one 1,000-event JSON body of 8 streams, all at one time (so
    any version of the service takes it again and again): what a change costs the service alone, whatever the
    load generators of two versions do differently."""
    import numpy as np

    from harness.serving.api import EventBatch, encode

    tmp = Path(tempfile.mkdtemp())
    body, _ = encode(EventBatch.of([f"w{i % 8}" for i in range(1000)], np.full(1000, 1.7e9),
                                   np.random.default_rng(0).normal(size=1000)), "json")
    (tmp / "body.json").write_bytes(body)
    (tmp / "post.lua").write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                                  f'local f = io.open("{tmp / "body.json"}", "rb")\nwrk.body = f:read("*all")\nf:close()\n')
    target = url.rstrip("/") + "/v1/score"
    subprocess.run(["wrk", "-t1", "-c8", "-d3s", "-s", str(tmp / "post.lua"), target], capture_output=True)  # warm
    for connections in (4, 16):
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(tmp / "post.lua"), "--latency",
                              target], capture_output=True, text=True).stdout
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
        p50, p99 = re.search(r"50%\s+(\S+)", out).group(1), re.search(r"99%\s+(\S+)", out).group(1)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        print(f"  wrk, {connections:2} connections: {float(rps):.0f} req/s, p50 {p50}, p99 {p99}, non-2xx {bad.group(1) if bad else 0}")
    shutil.rmtree(tmp, ignore_errors=True)


def load_cell(port: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    scenario = tmp / "cell.yaml"
    scenario.write_text(f"""name: bench-cell
detectors: [{{type: windowedGaussian}}]
serve: {{port: {port}}}
load: {{paths: [http], rates: [100], events_per_request: 1000, duration_s: 30, warmup_s: 5}}
""")
    t0 = time.perf_counter()
    r = harness("run", str(scenario), "--out", str(tmp / "out"))
    wall = time.perf_counter() - t0
    result = json.loads((tmp / "out" / "cells" / "windowedGaussian" / "result.json").read_text())
    task = result["tasks"]["load"]
    s = task["result"]["points"][0]["summary"]
    print(f"  load task {task['seconds']:.1f} s (deploy {task['result']['deploy_s']:.1f} s, warm-up "
          f"{task['result']['warmup']['seconds']:.1f} s, 5 s load warm-up + 30 s measured); whole `harness run` {wall:.1f} s "
          f"(Ray start, scoring); run: {s['achieved_eps']:,.0f} events/s p95 {s['latency_ms']['p95']:.1f} ms VALID {s['valid']}")
    if r.returncode:
        print(r.stderr[-2000:])
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--port", type=int, default=8123)
    a.add_argument("--skip-cell", action="store_true")
    a.add_argument("--code", type=Path, default=REPO, help="the checkout whose service and generator run")
    a.add_argument("--wrk-only", action="store_true", help="only wrk's closed-loop figures (apt install wrk)")
    args = a.parse_args()
    global CODE
    CODE = args.code.resolve()
    print(f"code: {CODE} ({subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=CODE, capture_output=True, text=True).stdout.strip()})")
    url = f"http://127.0.0.1:{args.port}"
    log = Path(tempfile.mkdtemp()) / "serve.log"
    proc = serve(args.port, log)
    if args.wrk_only:
        try:
            print(f"Closed loop, one 1,000-event JSON body ({CELL}):")
            wrk_closed_loop(url)
        finally:
            stop(proc)
        return
    try:
        print(f"Peak at p95 <= 100 ms over HTTP ({CELL}, harness serve, private Ray):")
        peak(url, 1000, "json", 100)
        peak(url, 10000, "msgpack", 40)
        if shutil.which("hey"):
            print("Fidelity, closed loop of 8 clients, 1,000-event JSON, 15 s:")
            fidelity(url, 8, 15)
        else:
            print("Fidelity: hey not installed (apt install hey); skipped")
    finally:
        stop(proc)
    proc = serve(args.port, log, "scenarios/baselines.yaml", "null")
    try:  # the request path's own ceiling: a detector that does nothing, so what is left is HTTP, Serve and decoding
        print("Peak at p95 <= 100 ms over HTTP (null: Serve's request path, no scoring):")
        peak(url, 1000, "msgpack", 150)
        peak(url, 1000, "json", 150)
    finally:
        stop(proc)
    proc = serve(args.port, log, *LEARNED)
    try:
        print(f"Peak at p95 <= 100 ms over HTTP ({LEARNED[1]}):")
        harness("load", url, "--events-per-request", "10000", "--encoding", "msgpack", "--concurrency", "1",
                "--duration", "20", "--warmup", "0")  # trains every stream's model
        peak(url, 10000, "msgpack", 20)
    finally:
        stop(proc)
    if not args.skip_cell:
        print("A load cell of 30 s measured:")
        load_cell(args.port)


if __name__ == "__main__":
    main()
