"""Where a served request's time goes: py-spy samples of the scoring replica and the HTTP proxy under a steady
open-loop load, as flame graphs and as shares of the busy samples by stage (decode, stream state, windowing,
inference, reconstruction errors, likelihood, encode, metrics, Serve's and Ray's own machinery). Prints them,
asserts nothing.

    python benchmarks/profile_serving.py [--cell autoencoder.onnxruntime-fp32] [--rate 60] [--out DIR]

Needs py-spy (pip install py-spy) and root (it reads the replica's memory). The service is `harness serve` on a
private Ray on 127.0.0.1; its streams are trained first by a closed-loop run, so the samples are of scoring.
The load generator shares the machine's cores, as in the serving benchmark.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import served  # benchmarks/served.py

REPO = Path(__file__).resolve().parents[1]
STAGES = [  # (stage, substrings of a frame); a sample goes to the first stage any of its frames matches
    ("inference (ONNX Runtime)", ["onnxruntime", "Compiled.infer", "OrtCompiled", "run_inference"]),
    ("reconstruction errors", ["DenseAutoencoder.errors", ".errors (harness/detectors"]),
    ("likelihood", ["likelihood.py", "rolling_quantile.py"]),
    ("windowing", ["training_pairs", "sliding", "split_windows", "normalise", "LearnedDetector.pairs"]),
    ("stream state and the detector's own scoring", ["streams.py", "harness/detectors/"]),
    ("decode", ["decode", "_decode_packed", "read_body"]),
    ("encode", ["encode_answer", "orjson", "msgpack"]),
    ("metrics", ["metrics.py", "Metric._record", "prometheus"]),
    ("Serve and Ray machinery", ["ray/", "starlette", "uvicorn", "asyncio", "concurrent/futures"]),
]
IDLE = ("Condition.wait", "Thread.run (threading.py", "_worker (concurrent/futures/thread.py", "Worker.main_loop")


def stages(raw: Path) -> tuple[int, collections.Counter]:
    """Busy samples, and their count per stage, from py-spy's raw (collapsed) output."""
    busy, out = 0, collections.Counter()
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        if not frames[-1] or frames[-1].startswith(IDLE):
            continue
        busy += int(n)
        out[next((name for name, keys in STAGES if any(k in f for f in frames for k in keys)), "other")] += int(n)
    return busy, out


def pid_of(pattern: str) -> int:
    return int(subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=True).stdout.split()[0])


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--scenario", default="scenarios/serving.yaml")
    a.add_argument("--cell", default="autoencoder.onnxruntime-fp32")
    a.add_argument("--rate", type=float, default=60, help="requests/s of the profiled load")
    a.add_argument("--events", type=int, default=10_000, help="events per request")
    a.add_argument("--encoding", default="msgpack")
    a.add_argument("--seconds", type=int, default=15)
    a.add_argument("--port", type=int, default=8123)
    a.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="profile-serving-")))
    args = a.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    harness = [sys.executable, "-m", "harness"]
    proc = served.start([args.scenario, "--cell", args.cell, "--port", str(args.port)], args.out / "serve.log", REPO)
    try:
        subprocess.run([*harness, "load", url, "--events-per-request", str(args.events), "--encoding", args.encoding,
                        "--concurrency", "1", "--duration", "20", "--warmup", "0"], cwd=REPO, check=True, capture_output=True)
        load = subprocess.Popen([*harness, "load", url, "--events-per-request", str(args.events), "--encoding", args.encoding,
                                 "--rate", str(args.rate), "--duration", str(2 * args.seconds + 10), "--warmup", "2"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(5)
        pids = {"replica": pid_of("ServeReplica:"), "proxy": pid_of("ray::ProxyActor")}
        for fmt, suffix in (("raw", "raw"), ("flamegraph", "svg")):  # one sampler per process at a time
            spies = [subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(args.seconds), "--format",
                                       fmt, "-o", str(args.out / f"{name}.{suffix}")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, pid in pids.items()]
            for s in spies:
                s.wait()
        summary = load.communicate()[0].strip().splitlines()
    finally:
        served.stop(proc)
    print(f"{args.cell}, {args.events:,}-event {args.encoding} requests at {args.rate:g}/s "
          f"({summary[-3] if len(summary) >= 3 else 'no summary'}; the samplers cost some of it)")
    for name in ("replica", "proxy"):
        busy, by = stages(args.out / f"{name}.raw")
        print(f"  {name}: {busy} busy samples; flame graph {args.out / f'{name}.svg'}")
        for stage, n in by.most_common():
            print(f"    {100 * n / max(busy, 1):5.1f}%  {stage}")


if __name__ == "__main__":
    main()
