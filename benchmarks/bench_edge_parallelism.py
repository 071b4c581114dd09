"""How many replicas a 1 GiB / 1 CPU edge node holds, per reference variant, before Ray's memory monitor (or the
kernel's OOM killer) kills one or the service breaks its SLA (p95 > the SLO): the number behind the edge playbook's
advice, "limit model parallelism on edge devices" (docs/playbooks.md). Prints a table; asserts nothing.

It brings up tests/chaos/edge-topology.yaml under a name of its own (an edge of 1 CPU and 1 GiB, 40 ms away), and for
each variant and each replica count k (1, 2, 3, 4, 6, ...; stopping at the first k that fails) serves the variant on
the edge with k stream shards (each reserving 0.7/k Ray CPU beside the 0.2 of its ingress), loads it from the client
node with `harness load` (open loop, --rate, 100-event msgpack requests, 4 streams), and records: the p95 the client
saw, requests not served (failed, shed or dropped), the edge cgroup's peak memory (memory.max_usage_in_bytes, reset before each k), workers Ray's
memory monitor killed there (its raylet log) and the kernel's OOM kills (memory.oom_control). Root, ip, tc and
cgroups v1 (memory.max_usage_in_bytes) as `harness cluster up` needs; minutes per variant. From the repository root:

    python benchmarks/bench_edge_parallelism.py [--variants windowedGaussian,autoencoder-fp32,autoencoder-int8]
        [--max-replicas 6] [--rate 20] [--slo-p95-ms 150]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY = REPO / "tests" / "chaos" / "edge-topology.yaml"
VARIANTS = {  # name -> (detector entry, backend entry or None, cell id)
    "windowedGaussian": ({"type": "windowedGaussian"}, None, "windowedGaussian@edge"),
    "autoencoder-fp32": ({"type": "autoencoder"}, {"backend": "onnxruntime", "precision": "fp32"},
                         "autoencoder.onnxruntime-fp32@edge"),
    "autoencoder-int8": ({"type": "autoencoder"}, {"backend": "onnxruntime", "precision": "int8", "quantization": "dynamic"},
                         "autoencoder.onnxruntime-int8-dynamic@edge"),
}
MEMCG = Path("/sys/fs/cgroup/memory")


def harness(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, check=False)


def scenario(folder: Path, variant: str, k: int) -> Path:
    detector, backend, _ = VARIANTS[variant]
    doc = {"name": "edge-parallelism", "corpus": {"synthetic": {"seed": 7, "rows": 500}}, "detectors": [detector],
           "targets": {"edge": {"labels": {"tier": "edge"}, "threads": 1}},
           "serve": {"shards": k, "cpus_per_shard": round(0.7 / k, 3), "cpus_per_ingress": 0.2, "max_batch_size": 16}}
    if backend:
        doc["backends"] = [backend]
    path = folder / f"{variant}-{k}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class EdgeWatch:
    """The edge node's memory figures: its cgroup's peak, Ray's memory-monitor kills, the kernel's OOM kills."""

    def __init__(self, state) -> None:
        self.edge = next(n for n in state.nodes if n.name == "edge")
        self.group = MEMCG / self.edge.cgroup
        self.logs = Path(state.temp_root) / "edge"

    def reset(self) -> tuple[int, int]:
        (self.group / "memory.max_usage_in_bytes").write_text("0")
        return self.ray_kills(), self.oom_kills()

    def peak_mib(self) -> float:
        return int((self.group / "memory.max_usage_in_bytes").read_text()) / 2**20

    def ray_kills(self) -> int:
        text = "".join(p.read_text(errors="replace") for p in self.logs.glob("session_*/logs/raylet*.out"))
        return sum(int(n) for n in re.findall(r"Killing (\d+) worker\(s\)", text))

    def oom_kills(self) -> int:
        found = re.search(r"oom_kill (\d+)", (self.group / "memory.oom_control").read_text())
        return int(found.group(1)) if found else 0


def serve(env: dict[str, str], name: str, head: str, scen: Path, cell: str, log: Path) -> tuple[subprocess.Popen, str | None]:
    """`harness serve` on the client node; the service's URL once it serves, or None if it ended first."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "harness", "cluster", "exec", name, "--", sys.executable, "-m",
                                 "harness", "serve", str(scen), "--cell", cell, "--address", head],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        found = re.search(r"serving \S+ at (\S+/v1/score)", log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        time.sleep(0.5)
    return proc, None


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def measure(env: dict[str, str], name: str, head: str, folder: Path, watch: EdgeWatch, variant: str, k: int,
            args: argparse.Namespace) -> dict:
    """One variant at k replicas on the edge: served, loaded, watched."""
    ray0, oom0 = watch.reset()
    cell = VARIANTS[variant][2]
    proc, url = serve(env, name, head, scenario(folder, variant, k), cell, folder / f"serve-{variant}-{k}.log")
    row: dict = {"variant": variant, "replicas": k, "p95_ms": None, "errors": None}
    try:
        if url is None:
            row["note"] = "did not deploy: " + (folder / f"serve-{variant}-{k}.log").read_text(errors="replace").strip()[-200:]
        else:
            load = harness(env, "cluster", "exec", name, "--", sys.executable, "-m", "harness", "load", url, "--rate",
                           str(args.rate), "--events-per-request", "100", "--encoding", "msgpack", "--streams", "4",
                           "--duration", str(args.duration), "--warmup", "2", "--timeout", "5", "--json")
            try:
                summary = json.loads(load.stdout)
            except json.JSONDecodeError:
                summary = {}
                row["note"] = f"harness load: {(load.stderr.strip().splitlines() or ['no output'])[-1][:300]}"
            failed = sum(summary.get(k) or 0 for k in ("errors", "shed", "dropped")) if summary else None
            row.update(p95_ms=(summary.get("latency_ms") or {}).get("p95"), errors=failed)
    finally:
        stop(proc)
    row.update(peak_mib=round(watch.peak_mib()), ray_kills=watch.ray_kills() - ray0, oom_kills=watch.oom_kills() - oom0)
    row["holds"] = bool(url) and not row["ray_kills"] and not row["oom_kills"] and not row["errors"] and \
        row["p95_ms"] is not None and row["p95_ms"] <= args.slo_p95_ms
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    p.add_argument("--max-replicas", type=int, default=6)
    p.add_argument("--rate", type=float, default=20.0, help="requests/s offered (100 events each)")
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument("--slo-p95-ms", type=float, default=150.0, help="the cloud-vs-edge SLO, the 40 ms link included")
    args = p.parse_args()
    from harness.topology import load_state

    folder = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    name = f"bp{uuid.uuid4().hex[:6]}"
    topo = yaml.safe_load(TOPOLOGY.read_text())
    topo.update(name=name, subnet="10.239.9.0/24")
    (folder / "topology.yaml").write_text(yaml.safe_dump(topo))
    env = {**os.environ, "HARNESS_STATE_DIR": str(folder / "state"), "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
           "HARNESS_HISTORY": "off"}
    up = harness(env, "cluster", "up", str(folder / "topology.yaml"))
    if up.returncode != 0:
        raise SystemExit(up.stderr)
    rows = []
    try:
        state = load_state(folder / "state" / f"{name}.json")
        watch = EdgeWatch(state)
        for variant in args.variants.split(","):
            for k in [k for k in (1, 2, 3, 4, 6, 8, 12) if k <= args.max_replicas]:
                row = measure(env, name, state.head_address, folder, watch, variant, k, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if not row["holds"]:
                    break
    finally:
        harness(env, "cluster", "down", name)
    print(f"\nEdge of 1 CPU, 1 GiB (Ray's monitor at 80%), {args.rate:g} req/s x 100 events, SLO p95 <= {args.slo_p95_ms:g} ms:")
    print("| variant | replicas | p95 ms | failed requests | edge peak MiB | Ray OOM kills | kernel OOM kills | holds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['replicas']} | {r['p95_ms'] if r['p95_ms'] is None else round(r['p95_ms'], 1)} | "
              f"{r['errors']} | {r['peak_mib']} | {r['ray_kills']} | {r['oom_kills']} | {'yes' if r['holds'] else 'NO'} |")
    for variant in args.variants.split(","):
        held = [r["replicas"] for r in rows if r["variant"] == variant and r["holds"]]
        print(f"{variant}: holds {max(held) if held else 0} replica(s)")


if __name__ == "__main__":
    main()
