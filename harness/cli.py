"""The `harness` command line. Heavy modules (ray, pandas, torch) are imported inside the commands that need
them, so `--help` and `validate` answer fast."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from harness.errors import InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + message by default)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's arguments: one small function per command (group) adds its subparser, in --help's order.
    Given the `command` a command line starts with, only that one is built (all when it names none): the `load`
    options are generated from pydantic models, a tenth of a second that `harness nab score` need not pay."""
    p = _Parser(prog="harness", description="Benchmark streaming anomaly detectors on NAB, on Ray.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    adders = {"validate": _add_validate, "run": _add_run, "scenarios": _add_scenarios, "report": _add_report, "serve": _add_serve,
              "load": _add_load, "history": _add_history, "compare": _add_compare, "export": _add_export, "cluster": _add_cluster,
              "feedback": _add_feedback, "leaderboard": _add_leaderboard, "corpus": _add_corpus, "nab": _add_nab}
    for add in [adders[command]] if command in adders else adders.values():
        add(sub)
    return p


def _add_validate(sub: "argparse._SubParsersAction") -> None:
    """`harness validate SCENARIO`."""
    v = sub.add_parser("validate", help="check a scenario file (and its corpus) and list its cells")
    v.add_argument("scenario", help="scenario YAML file, or a shipped scenario's name (`harness scenarios list`)")
    v.add_argument("--corpus", help="NAB-layout folder that replaces the scenario's corpus")
    v.add_argument("--only", action="append", type=_only, help="corpus categories or files (comma-separated; repeatable)")


def _add_run(sub: "argparse._SubParsersAction") -> None:
    """`harness run SCENARIO`: the run, resume, and its live metrics."""
    r = sub.add_parser("run", help="run a scenario on Ray and write a results folder")
    r.add_argument("scenario", help="scenario YAML file, or a shipped scenario's name (`harness scenarios list`)")
    r.add_argument("--out", help="results folder (default results/<timestamp>-<scenario name>)")
    r.add_argument(
        "--address",
        help="Ray cluster to join ('auto', or host:port); default: a private local Ray, or the job's cluster "
        "under `ray job submit`",
    )
    r.add_argument("--corpus", help="NAB-layout folder that replaces the scenario's corpus")
    r.add_argument("--only", action="append", type=_only, help="run on these corpus categories or files only "
                   "(comma-separated; repeatable), e.g. realTraffic or realTweets/Twitter_volume_AAPL.csv")
    r.add_argument("--resume", action="store_true", help="finish the interrupted run in --out (skips tasks done)")
    r.add_argument("--fail-on-sla", action="store_true", help="exit 1 when a cell's verdict against the scenario's "
                   "sla: objectives is FAIL (the sla column)")
    r.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics (cells, live load figures) at http://HOST:PORT/metrics while the run lasts")
    r.add_argument("--metrics-host", default="127.0.0.1", help="address the metrics listen on (default 127.0.0.1)")
    r.add_argument("--metrics-file", metavar="PATH", help="also write the metrics to PATH in Prometheus' text format after "
                   "every change (node_exporter's textfile collector), so the run's verdicts outlive it")
    r.add_argument("--serve-host", metavar="HOST", help="address the load cells' Serve proxies listen on, in place of "
                   "the scenario's serve.host (0.0.0.0 on a multi-host cluster, so the driver reaches a target node's proxy; "
                   "needs a token: --serve-token-file)")
    r.add_argument("--serve-token-file", metavar="FILE", help="the API token the load cells' services require, in place of "
                   "the scenario's serve.token_file (docs/serving.md)")


def _add_scenarios(sub: "argparse._SubParsersAction") -> None:
    """`harness scenarios list|show|copy`: the scenarios shipped with the package."""
    sc = sub.add_parser("scenarios", help="the scenarios shipped with the package: `harness run NAME` runs one")
    sc = sc.add_subparsers(dest="scenarios_cmd", required=True, parser_class=_Parser)
    sc.add_parser("list", help="their names and descriptions")
    ss = sc.add_parser("show", help="print one")
    ss.add_argument("name")
    scp = sc.add_parser("copy", help="write one to DEST (a file, or a folder), to edit it")
    scp.add_argument("name")
    scp.add_argument("dest")


def _add_report(sub: "argparse._SubParsersAction") -> None:
    """`harness report RUN_DIR [RUN_DIR ...]`: one self-contained HTML report (and PDF) from run folders."""
    rp = sub.add_parser("report", help="one self-contained HTML report (verdicts, insights, tables, plots) from run "
                        "folders (docs/reports.md)")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by `harness run`; several make one report")
    rp.add_argument("--out", metavar="FILE.html", help="where to write it (default: report.html in the run folder; "
                    "required with several folders)")
    rp.add_argument("--pdf", metavar="FILE.pdf", help="also print it to PDF through headless Chromium")
    rp.add_argument("--title", help="the report's title (default: 'Benchmark report: ' and the scenarios' names)")
    rp.add_argument("--history", metavar="PATH", help="the history store whose trend the report shows (default "
                    "$HARNESS_HISTORY, else results/history.sqlite)")


def _add_serve(sub: "argparse._SubParsersAction") -> None:
    """`harness serve SCENARIO --cell ID`: one cell's variant as a scoring service."""
    sv = sub.add_parser("serve", help="deploy one cell's variant as a Ray Serve scoring service (until Ctrl-C)")
    sv.add_argument("scenario", help="scenario YAML file (its serve: section shapes the deployment)")
    sv.add_argument("--cell", required=True, help="the cell id (see `harness validate`)")
    sv.add_argument("--port", type=int, help="HTTP port (default: the scenario's serve.port, 8000)")
    sv.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    sv.add_argument("--address", help="Ray cluster to deploy on ('auto', or host:port); default: a private local Ray")
    sv.add_argument("--token-file", metavar="FILE", help="require `Authorization: Bearer <token>` on every request, "
                    "the token being FILE's one line (default: the scenario's serve.token_file)")
    sv.add_argument("--no-auth", action="store_true", help="serve a non-loopback --host without a token, knowingly")


def _add_load(sub: "argparse._SubParsersAction") -> None:
    """`harness load URL`: the load generator against any service speaking the scoring API."""
    ld = sub.add_parser("load", help="load any endpoint speaking the scoring API and print the summary (docs/load.md)")
    from harness.load.command import add_arguments

    add_arguments(ld)


def _add_history(sub: "argparse._SubParsersAction") -> None:
    """`harness history list|show|index`: the history store."""
    h = sub.add_parser("history", help="runs indexed in the history store, and a metric's trend (docs/history.md)"
                       ).add_subparsers(dest="history_cmd", required=True, parser_class=_Parser)
    hl = h.add_parser("list", help="the latest runs")
    hl.add_argument("--scenario", help="only this scenario's runs")
    hl.add_argument("--limit", type=int, default=20)
    hs = h.add_parser("show", help="a metric's values over runs (a table column, or e.g. 'p95_ms[http peak]')")
    hs.add_argument("metric")
    hs.add_argument("--cell", help="only this cell")
    hs.add_argument("--plot", metavar="FILE.png", help="also write the trend as a plot")
    hi = h.add_parser("index", help="(re)index a run folder (runs index themselves when they end)")
    hi.add_argument("run_dir")
    hr = h.add_parser("rebuild", help="a fresh store from every run folder under RESULTS_ROOT (a corrupt store is kept aside)")
    hr.add_argument("results_root", nargs="?", default="results", help="the folder runs are written under (default results)")
    for hp in (hl, hs, hi, hr):
        hp.add_argument("--history", metavar="PATH", help="the store (default $HARNESS_HISTORY, else results/history.sqlite)")


def _add_compare(sub: "argparse._SubParsersAction") -> None:
    """`harness compare A B`: noise-aware verdicts between two runs."""
    cmp_ = sub.add_parser("compare", help="run A vs run B, metric by metric, with noise-aware verdicts; exit 1 on a regression")
    cmp_.add_argument("run_a", help="a run folder, a run id in the history, or `previous`: the latest earlier run "
                      "of run B's scenario in the history (none yet: nothing to compare, exit 0)")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--threshold", type=float, default=0.10, help="relative change that a measured figure must "
                      "exceed (beside its measured noise) to count (default 0.10)")
    cmp_.add_argument("--all", action="store_true", help="list unchanged figures too")
    cmp_.add_argument("--skip", action="append", default=[], metavar="GLOB", help="leave out figures matching this "
                      "(repeatable), e.g. seconds, 'p99_ms[*]'")
    cmp_.add_argument("--match", action="append", default=[], type=_pair, metavar="A_CELL=B_CELL",
                      help="judge run A's cell A_CELL against run B's B_CELL (repeatable): a rebuilt variant whose id "
                      "changed, e.g. a re-quantized or pruned build against the build it replaces")
    cmp_.add_argument("--allow-different", action="store_true", help="compare runs of different scenarios (refused "
                      "by default, exit 2: a baseline of another scenario is a mistake in a scheduled job)")
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("--history", metavar="PATH", help="where run ids are looked up, and earlier runs give each "
                      "figure's run-to-run noise")


def _add_export(sub: "argparse._SubParsersAction") -> None:
    """`harness export mlflow RUN`."""
    ex = sub.add_parser("export", help="export a run elsewhere").add_subparsers(dest="export_cmd", required=True, parser_class=_Parser)
    em = ex.add_parser("mlflow", help="each cell as an MLflow run: parameters, metrics, tables and plots")
    em.add_argument("run_dir")
    em.add_argument("--tracking-uri", default=None, help="default $MLFLOW_TRACKING_URI, else file:./mlruns")
    em.add_argument("--experiment", help="default: the scenario's name")


def _add_cluster(sub: "argparse._SubParsersAction") -> None:
    """`harness cluster up|down|status|exec|restart|limit|targets`: the local topology of network namespaces."""
    cl = sub.add_parser("cluster", help="a local Ray cluster of network namespaces: cloud and edge nodes on this machine "
                        "(docs/topology.md)").add_subparsers(dest="cluster_cmd", required=True, parser_class=_Parser)
    cu = cl.add_parser("up", help="start the topology of FILE: namespaces, shaped links, limited `ray start` nodes")
    cu.add_argument("file", help="topology YAML, e.g. clusters/local-cloud-edge.yaml")
    cd = cl.add_parser("down", help="stop a topology's nodes and remove everything it made")
    cd.add_argument("name", help="its name, or its file")
    cs = cl.add_parser("status", help="the nodes of a topology that is up")
    cs.add_argument("name", help="its name, or its file")
    ce = cl.add_parser("exec", help="run a command in the topology's client namespace, joined to the cluster")
    ce.add_argument("name", help="its name, or its file")
    ce.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND...")
    cr = cl.add_parser("restart", help="start a worker node's Ray again (after its processes died), and wait until it joins")
    cr.add_argument("name", help="its name, or its file")
    cr.add_argument("node", help="the node, e.g. edge")
    cli = cl.add_parser("limit", help="change a node's CPU quota live (the kernel's share; what Ray offers stays)")
    cli.add_argument("name", help="its name, or its file")
    cli.add_argument("node", help="the node, e.g. edge")
    cli.add_argument("--cpus", required=True, type=_cores, help="cores the node may use, e.g. 0.1; 'max' lifts the quota")
    ct = cl.add_parser("targets", help="each node's Ray metrics address with its labels, as a Prometheus file_sd file")
    ct.add_argument("name", help="its name, or its file")
    ct.add_argument("--out", help="write the file here (atomically; Prometheus re-reads it); default: print it")


def _verdict_options(p: "argparse.ArgumentParser") -> None:
    p.add_argument("--delay", type=_delay, default="0", help="event time after its alert from which a verdict may be used (default 0)")
    p.add_argument("--reviewer", default="label-studio", help="recorded in the log's reviewer column")


def _add_feedback(sub: "argparse._SubParsersAction") -> None:
    """`harness feedback simulate|export|import|push|pull|status|evaluate`: a run's review loop."""
    from harness.feedback import CONTEXT_ROWS

    fb = sub.add_parser("feedback", help="a run's review log: simulated or Label Studio verdicts, and what a feedback "
                        "policy makes of them (docs/thresholds.md)").add_subparsers(dest="feedback_cmd", required=True, parser_class=_Parser)
    fs = fb.add_parser("simulate", help="fill the review log's verdicts from the labels, standing in for reviewers")
    fs.add_argument("run_dir")
    fs.add_argument("--delay", type=_delay, default="1d", help="event time until a verdict arrives: 0, 30m, 6h, 1d (default), 2w")
    fs.add_argument("--error-rate", type=_fraction, default=0.0, help="share of verdicts that are wrong (default 0)")
    fs.add_argument("--seed", type=int, default=0)
    fs.add_argument("--replace", action="store_true", help="also replace verdicts already in the log")
    fx = fb.add_parser("export", help="the unjudged entries as Label Studio tasks, with its labeling config")
    fx.add_argument("run_dir")
    fx.add_argument("--context", type=_rows, default=CONTEXT_ROWS, help=f"records shown each side of an entry (default {CONTEXT_ROWS})")
    fi = fb.add_parser("import", help="verdicts from a Label Studio JSON export into the review log")
    fi.add_argument("run_dir")
    fi.add_argument("export_json", help="Label Studio's JSON export of the exported tasks")
    _verdict_options(fi)
    key_help = ("a file holding the API key (a personal access token from Label Studio's Account & Settings); "
                "default: the LABEL_STUDIO_API_KEY environment variable")
    fpu = fb.add_parser("push", help="the unjudged entries as tasks of a Label Studio project, created on the first push")
    fpu.add_argument("run_dir")
    fpu.add_argument("--label-studio", required=True, metavar="URL", help="the Label Studio server, e.g. http://127.0.0.1:8080")
    fpu.add_argument("--api-key-file", metavar="PATH", help=key_help)
    fpu.add_argument("--title", help="the project's title when it is created (default: harness review: <run folder>)")
    fpu.add_argument("--context", type=_rows, default=CONTEXT_ROWS, help=f"records shown each side of an entry (default {CONTEXT_ROWS})")
    fpl = fb.add_parser("pull", help="the verdicts annotated in the run's Label Studio project into the review log")
    fpl.add_argument("run_dir")
    fpl.add_argument("--label-studio", required=True, metavar="URL", help="the Label Studio server the run was pushed to")
    fpl.add_argument("--api-key-file", metavar="PATH", help=key_help)
    _verdict_options(fpl)
    fst = fb.add_parser("status", help="how far behind the reviewers are: entries without an arrived verdict, the oldest's "
                        "age, and the delay beyond which feedback stopped helping (docs/playbooks.md)")
    fst.add_argument("run_dir")
    fst.add_argument("--now", help="measure ages at this time (e.g. '2026-01-31 12:00:00'; a live service's wall clock); "
                     "default: each stream's newest record")
    fst.add_argument("--metrics-file", metavar="PATH", help="also write the figures to PATH in Prometheus' text format, "
                     "atomically (node_exporter's textfile collector)")
    fe = fb.add_parser("evaluate", help="NAB score and false alarms with a feedback policy vs none, by reviewer delay")
    fe.add_argument("run_dir")
    fe.add_argument("--delays", type=lambda t: [_delay(x) for x in t.split(",") if x.strip()], default="0,1h,1d,7d",
                    help="simulated reviewers' delays, comma-separated (default 0,1h,1d,7d)")
    fe.add_argument("--error-rate", type=_fraction, default=0.0, help="the simulated reviewers' share of wrong verdicts")
    fe.add_argument("--seed", type=int, default=0)
    fe.add_argument("--band", type=float, default=0.015, help="a false alarm silences scores within this relative distance of its own (default 0.015)")
    fe.add_argument("--forget", type=_delay, default="21d", help="event time after which a false alarm's silence ends (default 21d)")
    fe.add_argument("--lower-on-miss", action="store_true", help="also lower a stream's threshold to a confirmed missed window's highest score")


def _add_leaderboard(sub: "argparse._SubParsersAction") -> None:
    """`harness leaderboard RUN`."""
    lb = sub.add_parser("leaderboard", help="print a run's leaderboard (run detectors + NAB's published scores)")
    lb.add_argument("run_dir", help="a results folder written by `harness run`")


def _add_corpus(sub: "argparse._SubParsersAction") -> None:
    """`harness corpus synth|inject`: corpora to run on."""
    c = sub.add_parser("corpus", help="corpus utilities").add_subparsers(dest="corpus_cmd", required=True, parser_class=_Parser)
    s = c.add_parser("synth", help="write the embedded synthetic corpus (NAB layout) to DEST")
    s.add_argument("dest")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--rows", type=int, default=4032, help="rows per file")

    ij = c.add_parser("inject", help="plant spikes, level shifts, drifts, noise bursts and flat-lines into a corpus, "
                      "with their windows and kinds (recall per kind in the run's table)")
    ij.add_argument("source", help="a corpus in NAB's layout, or 'synthetic' for the embedded one")
    ij.add_argument("dest", help="the new corpus folder (absent or empty)")
    ij.add_argument("--kinds", type=_only, default=None, help="comma-separated, default all: spike,level_shift,drift,noise_burst,flatline")
    ij.add_argument("--per-file", type=int, default=1, help="anomalies planted per file (default 1)")
    ij.add_argument("--seed", type=int, default=0)


def _add_nab(sub: "argparse._SubParsersAction") -> None:
    """`harness nab fetch|score`: NAB itself."""
    n = sub.add_parser("nab", help="the Numenta Anomaly Benchmark").add_subparsers(dest="nab_cmd", required=True, parser_class=_Parser)
    f = n.add_parser("fetch", help="download NAB v1.1 at its pinned commit and verify every file's SHA-256")
    f.add_argument("dest")
    f.add_argument("--base-url", help="mirror to download from (default: NAB's repository at the pinned commit)")
    f.add_argument("--detectors", default="numenta,twitterADVec,windowedGaussian,null",
                   help="published detectors whose raw outputs to fetch too, so the leaderboard re-scores them: "
                        "all (305 MB of them), none, or names (default: %(default)s, 73 MB; the corpus is 10 MB)")
    sc = n.add_parser("score", help="score one detector's results folder (NAB's results layout)")
    sc.add_argument("results_dir", help="<detector>/<category>/<detector>_<file>.csv with an anomaly_score column")
    sc.add_argument("--corpus", required=True, help="NAB root (data/, labels/, config/)")
    how = sc.add_mutually_exclusive_group(required=True)
    how.add_argument("--thresholds", help="thresholds file in NAB's config/thresholds.json format")
    how.add_argument("--optimize", action="store_true", help="optimize one global threshold per profile")
    sc.add_argument("--json", action="store_true", help="print one JSON object")


def _only(text: str) -> list[str]:
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if not entries:
        raise argparse.ArgumentTypeError("expected categories or files, comma-separated")
    return entries


def _delay(text: str) -> float:
    from harness.feedback.review import parse_delay

    try:
        return parse_delay(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition("=")
    if not sep or not a.strip() or not b.strip():
        raise argparse.ArgumentTypeError(f"expected A_CELL=B_CELL, got {text!r}")
    return a.strip(), b.strip()


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _rows(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"expected a number of records from 0 to 100000, got {text!r}")
    return int(text)


def _cores(text: str) -> float | None:
    """`harness cluster limit --cpus`: a positive number of cores, or `max` (no quota)."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of cores such as 0.5, or max, got {text!r}")
    return value


def _flatten(only: list[list[str]] | None) -> list[str] | None:
    return None if only is None else [e for group in only for e in group]


def cmd_validate(args) -> int:
    from harness.plan import plan

    from harness.tasks import kinds_of

    p = plan(args.scenario, args.corpus, _flatten(args.only))
    print(f"{args.scenario}: ok, scenario {p.scenario.name!r}, corpus {p.describe_corpus()}, {len(p.cells)} cells:")
    load = p.scenario.load
    for c in p.cells:  # with the tasks each runs: which cells are timed and load-tested is not in their ids
        print(f"  {c.id}  ({', '.join(kinds_of(c, load is not None and load.load_tests(c.id)))})")
    return 0


_terminated = False  # set by SIGTERM: the interruption that follows is reported as a termination


def _terminate(signum, frame) -> None:
    """SIGTERM (a scheduler stopping the job, `kill`) is handled as Ctrl-C is. The flag, not the exception's
    type, says which it was: Ray may re-raise a KeyboardInterrupt of its own while it waits."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt()


def cmd_run(args) -> int:
    from harness.run import execute

    signal.signal(signal.SIGTERM, _terminate)
    metrics = (args.metrics_host, args.metrics_port) if args.metrics_port is not None else None
    outcome = execute(args.scenario, args.out, args.address, args.corpus, args.resume, _flatten(args.only), metrics,
                      args.metrics_file, (args.serve_host, args.serve_token_file))
    out, failed = outcome.root, outcome.not_ok
    from harness.report.summary import for_folder

    print(for_folder(out), end="")  # the key columns in 120 columns; table.md has them all
    print(f"results: {out}")
    if failed:
        print(f"harness: {len(failed)} cell(s) did not finish ok: {', '.join(failed)} (see table.md)", file=sys.stderr)
    if outcome.sla_failed and args.fail_on_sla:
        print(f"harness: {len(outcome.sla_failed)} cell(s) failed their SLA: {', '.join(outcome.sla_failed)} "
              "(the sla column of table.md)", file=sys.stderr)
    return 1 if failed or (outcome.sla_failed and args.fail_on_sla) else 0


def cmd_scenarios(args) -> int:
    from harness import shipped

    if args.scenarios_cmd == "list":
        for name in shipped.names():
            print(f"{name:<18} {shipped.description(shipped.path_of(name))}")
    elif args.scenarios_cmd == "show":
        print(shipped.path_of(args.name).read_text(encoding="utf-8"), end="")
    else:
        print(f"wrote {shipped.copy(args.name, args.dest)}")
    return 0


def cmd_report(args) -> int:
    """Everything is checked (the folders, --out, --pdf, the browser for it) before anything is written."""
    from pathlib import Path

    from harness.history.store import store_path
    from harness.report.html import check_out, write_report
    from harness.report.runs import load_run

    if args.out is None and len(args.run_dirs) > 1:
        raise InputError(f"{len(args.run_dirs)} run folders make one report: say where it goes with --out FILE.html", field="--out")
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report.html"
    check_out(out)
    if args.pdf:
        from harness.report.pdf import browser

        check_out(Path(args.pdf), ".pdf")
        browser()
    for d in args.run_dirs:
        if not Path(d).is_dir():
            raise InputError("not a folder: expected a run folder written by `harness run`", d)
    runs = [load_run(d) for d in args.run_dirs]
    write_report(runs, out, args.title, store_path(args.history))
    print(f"report: {out}")
    if args.pdf:
        from harness.report.pdf import print_pdf

        print(f"pdf: {print_pdf(out, Path(args.pdf))}")
    return 0


def cmd_serve(args) -> int:
    from harness.plan import service_config

    config = service_config(args.scenario, args.cell, port=args.port, host=args.host, token_file=args.token_file,
                            no_auth=args.no_auth)
    from harness.execution.runner import RayRunner, check_address, inside_ray_job
    from harness.serving.deploy import check_free, deploy, undeploy

    check_address(args.address)
    if args.address is None and not inside_ray_job():  # a private Ray: refuse a busy port before starting it
        check_free(config.serve.host, config.serve.port, "--port")
    signal.signal(signal.SIGTERM, _terminate)
    deployed = False

    def started() -> None:
        nonlocal deployed
        deployed = True

    with RayRunner(args.address, code=config.user_code()) as runner:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ray's own handler would swallow Ctrl-C here
        signal.signal(signal.SIGTERM, _terminate)
        try:
            service = deploy(config, SERVE_APP, route_prefix="/", exclusive_app=SERVE_APP, on_start=started)
            auth = "; every request needs its Authorization: Bearer token" if config.api_token else ""
            print(f"serving {args.cell} at {service.url} (status: {service.status_url}){auth}; Ctrl-C stops", flush=True)
            signal.pause()
        except KeyboardInterrupt:
            print("harness: stopping the service", file=sys.stderr)
        finally:
            if deployed and not runner.private:  # a private Ray takes the application down with it, at once
                print("harness: asked Serve to delete the application; the cluster finishes that in the background",
                      file=sys.stderr)
                undeploy(SERVE_APP, wait=False)
    return 0


SERVE_APP = "scoring"  # the application `harness serve` deploys, at route /


def cmd_load(args) -> int:
    """Exit 0 for a VALID run (or a peak found), 1 otherwise: a script can gate on it (harness.load.command)."""
    from harness.load.command import run_command

    return run_command(args)


def cmd_history_list(args) -> int:
    from harness.history.store import runs, store_path

    path = store_path(args.history)
    rows = runs(path, args.scenario, args.limit) if path else []
    if not rows:
        print(f"no runs in {path}" if path else "the history is off (HARNESS_HISTORY=off)")
        return 0
    print(f"{'run':<48} {'scenario':<20} {'started':<27} {'status':<11} {'ok/cells':>8}  code")
    for r in rows:
        print(f"{r['run_id']:<48} {r['scenario'] or '':<20} {r['started_at'] or '':<27} {r['status']:<11} {r['ok']:>3}/{r['cells']:<4}  {(r['git_commit'] or '')[:12]}")
    return 0


def cmd_history_show(args) -> int:
    from harness.history.store import store_path, trend

    path = store_path(args.history)
    rows = trend(path, args.metric, args.cell) if path else []
    if not rows:
        raise InputError(f"no values of {args.metric!r}{' for ' + args.cell if args.cell else ''} in {path}", field="metric")
    for r in rows:
        noise = f" ± {r['noise_pct']:.1f}%" if r["noise_pct"] is not None else ""
        print(f"{r['started_at']}  {r['run_id']}  {r['cell']}  {r['value']:.6g}{noise}  {(r['git_commit'] or '')[:12]}")
    if args.plot:
        from harness.atomic import write_bytes
        from harness.history.trend import plot

        write_bytes(args.plot, plot(rows, args.metric))
        print(f"plot: {args.plot}")
    return 0


def cmd_history_index(args) -> int:
    from harness.history.store import index_run, store_path

    path = store_path(args.history)
    if path is None:
        raise InputError("the history is off (HARNESS_HISTORY=off); give --history PATH", field="--history")
    print(f"{index_run(args.run_dir, path)} indexed in {path}")
    return 0


def cmd_history_rebuild(args) -> int:
    """Exit 0 when every run folder was indexed, 1 when some could not be read (each named on stderr)."""
    from harness.history.store import rebuild, store_path

    path = store_path(args.history)
    if path is None:
        raise InputError("the history is off (HARNESS_HISTORY=off); give --history PATH", field="--history")
    aside, indexed, skipped = rebuild(path, args.results_root)
    if aside is not None:
        print(f"the previous store is kept as {aside}")
    print(f"{len(indexed)} run(s) under {args.results_root} indexed in {path}")
    for why in skipped:
        print(f"harness: skipped: {why}", file=sys.stderr)
    return 1 if skipped else 0


def cmd_compare(args) -> int:
    """Exit 0 when nothing regressed, 1 when something did: a scheduled sweep can alert on it."""
    from harness.history.compare import compare, markdown
    from harness.history.store import DEFAULT, folder_of, store_path

    if not 0 <= args.threshold < 10:
        raise InputError("expected a fraction such as 0.1", field="--threshold")
    path = store_path(args.history) or DEFAULT
    run_b = folder_of(path, args.run_b)
    run_a = _previous_of(path, run_b) if args.run_a == "previous" else folder_of(path, args.run_a)
    if run_a is None:
        print(f"no earlier run of {run_b}'s scenario in {path}: nothing to compare")
        return 0
    result = compare(run_a, run_b, args.threshold, history=path, skip=tuple(args.skip),
                     match=dict(args.match), allow_different=args.allow_different)
    print(json.dumps(result.to_dict()) if args.json else markdown(result, only_changes=not args.all), end="" if not args.json else "\n")
    return 1 if result.failures else 0


def _previous_of(path: "Path", run: "Path") -> "Path | None":
    """`harness compare previous RUN`: the run that a scheduled sweep's new run is judged against."""
    from pathlib import Path

    from harness.history.store import previous_run
    from harness.results.folder import RunFolder

    manifest, _ = RunFolder(run).read_run()
    scenario = str(manifest.scenario.get("resolved", {}).get("name") or run.name)
    found = previous_run(path, scenario, manifest.started_at, run)
    return None if found is None else Path(found["path"])


def cmd_export_mlflow(args) -> int:
    import os

    from harness.history.mlflow_export import export_run

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "file:./mlruns"
    ids = export_run(args.run_dir, uri, args.experiment)
    print(f"{len(ids)} MLflow run(s) logged to {uri}")
    return 0


def cmd_cluster_up(args) -> int:
    from harness.topology import UpFailed, describe, up

    signal.signal(signal.SIGTERM, _terminate)  # as Ctrl-C: `up` removes what it made before it exits
    try:
        state = up(args.file)
    except UpFailed as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1
    print(f"topology {state.name} is up ({state.method} shapes delay and jitter; auth {state.auth}):")
    print("\n".join("  " + line for line in describe(state)))
    print(f"delayed by {state.delays}")
    print(f"next: harness cluster exec {state.name} -- harness run scenarios/cloud-vs-edge.yaml --address {state.head_address}")
    print(f"stop: harness cluster down {state.name}")
    return 0


def cmd_cluster_down(args) -> int:
    from harness.topology import down

    print(f"{args.name}: {'removed' if down(args.name) else 'nothing was up'}")
    return 0


def cmd_cluster_status(args) -> int:
    from harness.topology import describe, up_state

    state = up_state(args.name)
    print(f"topology {state.name}: head {state.head_address}, {state.method} shapes delay and jitter, auth {state.auth}")
    print("\n".join("  " + line for line in describe(state)))
    if state.delays:
        print(f"delayed by {state.delays}")
    return 0


def cmd_cluster_exec(args) -> int:
    from harness.topology import exec_in

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise InputError("expected a command after --", field="cluster exec")
    return exec_in(args.name, cmd)


def cmd_cluster_restart(args) -> int:
    import time

    from harness.topology import restart

    started = time.perf_counter()
    node = restart(args.name, args.node)
    print(f"{node.name}: ray started again at {node.ip} and joined in {time.perf_counter() - started:.1f} s "
          "(a new Ray node: what ran there is placed on it again by its owner, Serve included)")
    return 0


def cmd_cluster_limit(args) -> int:
    from harness.topology import set_cpus

    node = set_cpus(args.name, args.node, args.cpus)
    print(f"{node.name}: CPU quota {'lifted' if args.cpus is None else f'{args.cpus:g} core(s)'} (Ray still offers {node.cpus:g} CPU)")
    return 0


def cmd_cluster_targets(args) -> int:
    from harness.topology import up_state
    from harness.topology.scrape import prometheus_targets, write_targets

    state = up_state(args.name)
    if args.out:
        print(f"{len(write_targets(state, args.out))} node(s) written to {args.out}")
    else:
        print(json.dumps(prometheus_targets(state), indent=1))
    return 0


def cmd_feedback_simulate(args) -> int:
    from harness.feedback.review import open_run, read_log, simulate

    run = open_run(args.run_dir)
    entries = read_log(run)
    n = simulate(run, entries, args.delay, args.error_rate, args.seed, args.replace)
    run.folder.write_review(entries)
    print(f"{n} verdict(s) simulated ({sum(e.judged for e in entries)} of {len(entries)} entries judged): {run.folder.review_log}")
    return 0


def cmd_feedback_export(args) -> int:
    from harness.feedback.labelstudio import LABEL_CONFIG
    from harness.feedback.review import label_studio_tasks, open_run, read_log

    run = open_run(args.run_dir)
    todo = label_studio_tasks(run, read_log(run), args.context)
    paths = run.folder.write_labelstudio(todo, LABEL_CONFIG)
    print(f"{len(todo)} task(s) for Label Studio: import {paths[0]} into a project labelled with {paths[1]}")
    return 0


def _import_verdicts(run, entries, verdicts: dict[str, str], args, source: str) -> int:
    """The verdicts into the review log (written once, whole), or one line if any names an entry it lacks."""
    from harness.feedback.review import import_verdicts

    n, unknown = import_verdicts(entries, verdicts, args.delay, args.reviewer)
    if unknown:
        raise InputError(f"{len(unknown)} task(s) name entries this run's log does not have, e.g. {unknown[0]!r}: "
                         "export from this run", source)
    run.folder.write_review(entries)
    print(f"{n} verdict(s) imported ({sum(e.judged for e in entries)} of {len(entries)} entries judged): {run.folder.review_log}")
    return 0


def cmd_feedback_import(args) -> int:
    from harness.feedback.labelstudio import read_export
    from harness.feedback.review import open_run, read_log

    run = open_run(args.run_dir)
    return _import_verdicts(run, read_log(run), read_export(args.export_json), args, args.export_json)


def cmd_feedback_push(args) -> int:
    from harness.feedback.labelstudio import LABEL_CONFIG
    from harness.feedback.labelstudio_api import Server, api_key
    from harness.feedback.review import label_studio_tasks, open_run, read_log

    run = open_run(args.run_dir)
    todo = label_studio_tasks(run, read_log(run), args.context)
    server = Server(args.label_studio, *api_key(args.api_key_file))
    title = args.title or f"harness review: {run.folder.root.name}"
    project, created = server.project(run.folder.labelstudio_project(server.url), title, LABEL_CONFIG)
    if created:
        run.folder.write_labelstudio_project(server.url, project)
    added = server.add(project, todo)
    print(f"{added} task(s) added to Label Studio project {project} ({'created' if created else 'existing'}; "
          f"{len(todo) - added} already there): {server.url}/projects/{project}")
    return 0


def cmd_feedback_pull(args) -> int:
    from harness.feedback.labelstudio import parse_export
    from harness.feedback.labelstudio_api import Server, api_key
    from harness.feedback.review import open_run, read_log

    run = open_run(args.run_dir)
    entries = read_log(run)
    server = Server(args.label_studio, *api_key(args.api_key_file))
    project = run.folder.labelstudio_project(server.url)
    if project is None:
        raise InputError(f"this run has no project on {server.url}: `harness feedback push` it there first", field="--label-studio")
    source = f"{server.url}/projects/{project}"
    return _import_verdicts(run, entries, parse_export(server.tasks(project), source), args, source)


def cmd_feedback_status(args) -> int:
    """Exit 0 whatever the backlog: the metrics file and its alert rule (HarnessFeedbackLate) page, not the exit."""
    from harness.feedback.review import open_run, read_log
    from harness.feedback.status import status, write_metrics
    from harness.results.review_log import seconds_of

    run = open_run(args.run_dir)
    now = None if args.now is None else seconds_of(args.now, "--now")
    cells = status(run, read_log(run), now)
    if args.metrics_file:
        scenario = run.folder.read_manifest().scenario.get("resolved", {}).get("name", "")
        write_metrics(args.metrics_file, scenario, cells)
    print("| cell | entries | pending | oldest pending | median delay | feedback helps up to | verdict |\n|---|---|---|---|---|---|---|")
    for c in cells:
        helps = "not evaluated (harness feedback evaluate)" if c.useful_delay_s is None else _age(c.useful_delay_s)
        verdict = (f"LATE: run without the feedback policy until reviewers are within {_age(c.useful_delay_s or 0)}" if c.late
                   else "ok" if c.useful_delay_s is not None else "")
        median = "" if c.median_delay_s is None else _age(c.median_delay_s)
        print(f"| {c.cell} | {c.entries} | {c.pending} | {_age(c.oldest_pending_age_s)} | {median} | {helps} | {verdict} |")
    if args.metrics_file:
        print(f"\nmetrics: {args.metrics_file}")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def cmd_feedback_evaluate(args) -> int:
    import pandas as pd

    from harness.report import tables
    from harness.feedback.review import evaluate, open_run, read_log

    run = open_run(args.run_dir)
    policy = {"band": args.band, "forget_s": args.forget, "lower_on_miss": args.lower_on_miss}
    table = pd.DataFrame(evaluate(run, policy, args.delays, args.error_rate, args.seed, read_log(run)))
    md = tables.markdown(table)
    path = run.folder.write_feedback(table.to_csv(index=False), md)
    print(md, end="")
    print(f"\nfeedback: {path}")
    return 0


def cmd_leaderboard(args) -> int:
    from harness.results.folder import RunFolder

    print(RunFolder(args.run_dir).leaderboard_markdown(), end="")
    return 0


def cmd_corpus_synth(args) -> int:
    from harness.corpus.synthetic import write_corpus

    print(write_corpus(args.dest, args.seed, args.rows))
    return 0


def cmd_corpus_inject(args) -> int:
    from harness.corpus.inject import KINDS, inject, write_injected
    from harness.corpus.layout import check_layout, load_corpus

    if args.source == "synthetic":
        from harness.corpus.synthetic import cached_corpus_root

        source = cached_corpus_root()
    else:
        source = check_layout(args.source)
    files, counts = inject(load_corpus(source), tuple(args.kinds or KINDS), args.per_file, args.seed)
    print(f"{write_injected(args.dest, files)}: planted {', '.join(f'{n} {k}' for k, n in counts.items())}")
    return 0


def cmd_nab_fetch(args) -> int:
    from harness.corpus.fetch import fetch_nab, files_for, parse_detectors
    from harness.progress import ProgressBar

    detectors = parse_detectors(args.detectors)
    with ProgressBar(len(files_for(detectors)), "files", "fetched") as bar:
        print(fetch_nab(args.dest, base_url=args.base_url, progress=lambda done, total: bar.update(done),
                        detectors=detectors))
    return 0


def cmd_nab_score(args) -> int:
    from harness.corpus.layout import load_corpus
    from harness.scoring.nab import score_detector
    from harness.scoring.profiles import load_profiles, load_thresholds
    from harness.scoring.results_layout import read_results_dir

    corpus = load_corpus(args.corpus, values=False)
    profiles = load_profiles(corpus.root / "config" / "profiles.json")
    detector, scores = read_results_dir(args.results_dir, corpus)
    thresholds = None if args.optimize else load_thresholds(args.thresholds, detector, profiles)
    rep = score_detector(corpus.files, scores, detector, thresholds, profiles, label_windows=corpus.label_windows)
    if args.json:
        print(json.dumps(rep.to_dict()))  # detector, profiles, and the detection metrics at each threshold
        return 0
    print(f"{'profile':<20} {'score':>10} {'raw':>10} {'threshold':>20} {'tp':>5} {'fp':>6} {'fn':>5} {'f1':>7} {'fp_events':>9}")
    for name, s in rep.profiles.items():
        d = rep.detection[name]
        print(f"{name:<20} {s.score:>10.4f} {s.raw:>10.4f} {s.threshold!r:>20} {s.tp:>5} {s.fp:>6} {s.fn:>5} {d.f1:>7.4f} {d.fp_events:>9}")
    return 0


COMMANDS = {
    ("validate",): cmd_validate,
    ("run",): cmd_run,
    ("scenarios", "list"): cmd_scenarios,
    ("scenarios", "show"): cmd_scenarios,
    ("scenarios", "copy"): cmd_scenarios,
    ("report",): cmd_report,
    ("serve",): cmd_serve,
    ("load",): cmd_load,
    ("leaderboard",): cmd_leaderboard,
    ("history", "list"): cmd_history_list,
    ("history", "show"): cmd_history_show,
    ("history", "index"): cmd_history_index,
    ("history", "rebuild"): cmd_history_rebuild,
    ("compare",): cmd_compare,
    ("export", "mlflow"): cmd_export_mlflow,
    ("cluster", "up"): cmd_cluster_up,
    ("cluster", "down"): cmd_cluster_down,
    ("cluster", "status"): cmd_cluster_status,
    ("cluster", "exec"): cmd_cluster_exec,
    ("cluster", "restart"): cmd_cluster_restart,
    ("cluster", "limit"): cmd_cluster_limit,
    ("cluster", "targets"): cmd_cluster_targets,
    ("feedback", "simulate"): cmd_feedback_simulate,
    ("feedback", "export"): cmd_feedback_export,
    ("feedback", "import"): cmd_feedback_import,
    ("feedback", "push"): cmd_feedback_push,
    ("feedback", "pull"): cmd_feedback_pull,
    ("feedback", "evaluate"): cmd_feedback_evaluate,
    ("feedback", "status"): cmd_feedback_status,
    ("corpus", "synth"): cmd_corpus_synth,
    ("corpus", "inject"): cmd_corpus_inject,
    ("nab", "fetch"): cmd_nab_fetch,
    ("nab", "score"): cmd_nab_score,
}


def main(argv: list[str] | None = None) -> int:
    import errno

    from harness.errors import InputError, RunStopped

    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv[0] if argv else None).parse_args(argv)
    sub = (getattr(args, f"{args.command}_cmd", None),)
    key = tuple(x for x in (args.command, *sub) if x)
    try:
        return COMMANDS[key](args)
    except InputError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except RunStopped as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"harness: error: no space left on device (ENOSPC) writing {exc.filename or 'a file'}: free space there",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        how = "terminated" if _terminated else "interrupted"
        kept = "; finished tasks are kept (finish the run with --resume --out DIR)" if args.command == "run" else ""
        print(f"harness: {how}{kept}", file=sys.stderr)
        return 143 if _terminated else 130
    except BrokenPipeError:  # `harness validate X | head`: the reader left; say nothing more, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
