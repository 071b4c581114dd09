"""Record by record (`start` / `score_one` / `learn_one`) against the vectorised `score_file`, on every NAB file,
for every built-in detector: the full form of tests/test_streaming.py's sampled test, with its tolerances.

    HARNESS_NAB=data/nab python benchmarks/bench_streaming_equivalence.py [--worst 5]

Prints, per detector: rows compared, the largest difference off damping near-ties and its file, the near-tie rows
(and their share against the limit), then each detector's `--worst` files (the candidates for the test's SAMPLE)
and the seconds it took. Exits 1 if any detector breaks a tolerance, with one line per disagreement.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_test_module():
    """tests/test_streaming.py (and its conftest, for NAB's location), as the test itself uses them."""
    sys.path.insert(0, str(REPO / "tests"))
    spec = importlib.util.spec_from_file_location("test_streaming", REPO / "tests" / "test_streaming.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["test_streaming"] = module  # the process pool's workers find compare() by this name
    spec.loader.exec_module(module)
    return module


def report(t, got: dict, worst: int) -> list[str]:
    """Print each detector's figures; return the disagreements."""
    bad = []
    for (kind, params), f in got.items():
        share = f["tie_rows"] / f["rows"] if f["rows"] else 0.0
        print(f"{kind:<17} {params:<60} rows {f['rows']:>7}  worst {f['worst']:.3g} (tolerance {t.TOLERANCE[kind]:g}) "
              f"on {f['where'] or '-'}  near-tie rows {f['tie_rows']} ({share:.3%}, limit {t.MAX_TIE_SHARE:.1%})")
        differing = [kv for kv in f["per_file"].items() if kv[1] != (0.0, 0)]
        ranked = sorted(differing, key=lambda kv: (kv[1][1], kv[1][0]), reverse=True)[:worst]
        if not differing:
            print("    every file identical in both paths")
        for name, (d, ties) in ranked:
            print(f"    {name:<60} worst {d:.3g}  near-tie rows {ties}")
        bad += t.disagreements(kind, params, f)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worst", type=int, default=5, help="files listed per detector, most near-ties / largest difference first")
    args = ap.parse_args()
    t = load_test_module()
    if not (t.NAB / "labels" / "combined_windows.json").is_file():
        print(f"NAB not found at {t.NAB} (set HARNESS_NAB)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        got = t.compare_all(cache, None)
    bad = report(t, got, args.worst)
    print(f"{sum(f['rows'] for f in got.values()) // len(got)} rows per detector, {time.perf_counter() - start:.0f} s")
    for line in bad:
        print(f"DISAGREE: {line}", file=sys.stderr)
    print("all detectors agree within their tolerances" if not bad else f"{len(bad)} disagreement(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
