"""How the feedback policy's settings trade false alarms for NAB score: a scan of `band` x `forget` on one cell of a
finished run, with a simulated reviewer at one delay. This is the scan that chose the defaults (on NAB's own labels:
optimistic, as NAB's optimised threshold is). Prints one line per setting; asserts nothing.

    harness run scenarios/thresholds.yaml --corpus data/nab --out results/thresholds
    python benchmarks/bench_feedback.py results/thresholds --cell autoencoder
"""

from __future__ import annotations

import argparse
import itertools

from harness.feedback.review import delay_text, evaluate, open_run, parse_delay

BANDS = (0.005, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.03)
FORGET_DAYS = (2, 7, 14, 21, 25, 30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--cell", required=True)
    ap.add_argument("--delay", default="1d")
    args = ap.parse_args()
    run = open_run(args.run_dir)
    run.cells = [c for c in run.cells if c.id == args.cell]
    if not run.cells:
        raise SystemExit(f"no ok cell {args.cell!r} in {args.run_dir}")
    delay = parse_delay(args.delay)
    base = None
    for band, days in itertools.product(BANDS, FORGET_DAYS):
        none, fed = evaluate(run, {"band": band, "forget_s": days * 86_400.0}, [delay], 0.0)
        if base is None:
            base = none
            print(f"{args.cell}, no feedback: NAB standard {none['nab_standard']:.2f}, {none['fp_events']} FP events")
        print(f"band {band:<7g} forget {days:>2} d, delay {delay_text(delay)}: NAB standard {fed['nab_standard']:.2f} "
              f"({fed['nab_delta']:+.2f}), FP events {fed['fp_events']} ({fed['fp_events_change_pct']:+.1f}%)")


if __name__ == "__main__":
    main()
