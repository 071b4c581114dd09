"""The `harness` command line. Heavy modules (ray, pandas, torch) are imported inside the commands that need
them, so `--help` and `validate` answer fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + message by default)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="harness", description="Benchmark streaming anomaly detectors on NAB, on Ray.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    v = sub.add_parser("validate", help="check a scenario file and list its cells")
    v.add_argument("scenario", help="scenario YAML file")
    v.add_argument("--corpus", help="NAB-layout folder that replaces the scenario's corpus")

    r = sub.add_parser("run", help="run a scenario on Ray and write a results folder")
    r.add_argument("scenario", help="scenario YAML file")
    r.add_argument("--out", help="results folder (default results/<timestamp>-<scenario name>)")
    r.add_argument("--address", help="Ray cluster to join ('auto' under `ray job submit`); default: a local Ray")
    r.add_argument("--corpus", help="NAB-layout folder that replaces the scenario's corpus")
    r.add_argument("--resume", action="store_true", help="finish an interrupted run in --out (skips cells done)")

    lb = sub.add_parser("leaderboard", help="print a run's leaderboard (run detectors + NAB's published scores)")
    lb.add_argument("run_dir", help="a results folder written by `harness run`")

    c = sub.add_parser("corpus", help="corpus utilities").add_subparsers(dest="corpus_cmd", required=True, parser_class=_Parser)
    s = c.add_parser("synth", help="write the embedded synthetic corpus (NAB layout) to DEST")
    s.add_argument("dest")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--rows", type=int, default=4032, help="rows per file")

    n = sub.add_parser("nab", help="the Numenta Anomaly Benchmark").add_subparsers(dest="nab_cmd", required=True, parser_class=_Parser)
    f = n.add_parser("fetch", help="download NAB v1.1 at its pinned commit and verify every file's SHA-256")
    f.add_argument("dest")
    f.add_argument("--base-url", help="mirror to download from (default: NAB's repository at the pinned commit)")
    sc = n.add_parser("score", help="score one detector's results folder (NAB's results layout)")
    sc.add_argument("results_dir", help="<detector>/<category>/<detector>_<file>.csv with an anomaly_score column")
    sc.add_argument("--corpus", required=True, help="NAB root (data/, labels/, config/)")
    how = sc.add_mutually_exclusive_group(required=True)
    how.add_argument("--thresholds", help="thresholds file in NAB's config/thresholds.json format")
    how.add_argument("--optimize", action="store_true", help="optimize one global threshold per profile")
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def cmd_validate(args) -> int:
    from harness.run import plan

    p = plan(args.scenario, args.corpus, load_data=False)
    corpus = p.scenario.corpus
    where = corpus.path if corpus.path else f"synthetic (seed {corpus.synthetic.seed}, {corpus.synthetic.rows} rows/file)"
    print(f"{args.scenario}: ok, scenario {p.scenario.name!r}, corpus {where}, {len(p.cells)} cells:")
    for c in p.cells:
        print(f"  {c.id}")
    return 0


def cmd_run(args) -> int:
    from harness.run import execute

    out, failed = execute(args.scenario, args.out, args.address, args.corpus, args.resume)
    print((out / "table.md").read_text(), end="")
    print(f"\nresults: {out}")
    if failed:
        print(f"harness: {len(failed)} cell(s) did not finish ok: {', '.join(failed)} (see table.md)", file=sys.stderr)
        return 1
    return 0


def cmd_leaderboard(args) -> int:
    from harness.errors import InputError

    path = Path(args.run_dir) / "leaderboard.md"
    if not path.is_file():
        raise InputError("no leaderboard.md: expected a results folder written by `harness run`", args.run_dir)
    print(path.read_text(), end="")
    return 0


def cmd_corpus_synth(args) -> int:
    from harness.corpus.synthetic import write_corpus

    print(write_corpus(args.dest, args.seed, args.rows))
    return 0


def cmd_nab_fetch(args) -> int:
    from harness.corpus.fetch import fetch_nab

    def progress(done: int, total: int) -> None:
        print(f"\rfetched {done}/{total} files", end="" if done < total else "\n", file=sys.stderr, flush=True)

    print(fetch_nab(args.dest, base_url=args.base_url, progress=progress))
    return 0


def cmd_nab_score(args) -> int:
    from harness.corpus.layout import load_corpus
    from harness.scoring.nab import score_detector
    from harness.scoring.profiles import load_profiles, load_thresholds
    from harness.scoring.results_layout import read_results_dir

    corpus = load_corpus(args.corpus, series=False)
    profiles = load_profiles(Path(args.corpus) / "config" / "profiles.json")
    detector, scores = read_results_dir(args.results_dir, corpus)
    thresholds = None if args.optimize else load_thresholds(args.thresholds, detector, profiles)
    rep = score_detector(corpus.files, scores, detector, thresholds, profiles, label_windows=corpus.label_windows)
    if args.json:
        print(json.dumps({"detector": detector, "profiles": rep.to_dict()["profiles"]}))
        return 0
    print(f"{'profile':<20} {'score':>10} {'raw':>10} {'threshold':>14} {'tp':>5} {'fp':>6} {'fn':>5}")
    for name, s in rep.profiles.items():
        print(f"{name:<20} {s.score:>10.4f} {s.raw:>10.4f} {s.threshold:>14.10g} {s.tp:>5} {s.fp:>6} {s.fn:>5}")
    return 0


COMMANDS = {
    ("validate",): cmd_validate,
    ("run",): cmd_run,
    ("leaderboard",): cmd_leaderboard,
    ("corpus", "synth"): cmd_corpus_synth,
    ("nab", "fetch"): cmd_nab_fetch,
    ("nab", "score"): cmd_nab_score,
}


def main(argv: list[str] | None = None) -> int:
    from harness.errors import InputError

    args = _parser().parse_args(argv)
    key = tuple(x for x in (args.command, getattr(args, "corpus_cmd", None), getattr(args, "nab_cmd", None)) if x)
    try:
        return COMMANDS[key](args)
    except InputError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; finished cells are kept (rerun with --resume)", file=sys.stderr)
        return 130
