"""Every column of `table.csv`, described once: its name, unit, which direction is better, where its noise figure
comes from, and how its value is read from a typed `CellResult` (or derived from other columns).

The table renders from these descriptors, the README's column reference is checked against them, and anything
that compares numbers (the INT8 gate, `harness compare` and the history's verdicts) asks them which way is better
and how much a difference must exceed to be more than noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from harness.results.schema import CellResult
from harness.scoring.profiles import REFERENCE_PROFILE

Better = Literal["higher", "lower"] | None
DETERMINISTIC = "none: deterministic (seeded; a rerun gives the same value)"
VERDICT = "a verdict: any move is judged (PASS to FAIL regresses)"


@dataclass(frozen=True)
class Column:
    name: str
    doc: str
    unit: str = ""
    better: Better = None
    noise: str | None = None  # a column holding this one's noise figure, or where it comes from
    value: Callable[[CellResult], Any] | None = None  # None: derived from other columns by the table
    backend: bool = False  # shown only when the run has backend cells
    target: bool = False  # shown only when the run has cells on targets
    anomaly_kinds: bool = False  # shown only when the corpus names its windows' anomaly kinds
    exact: bool = False  # printed with every digit (thresholds: 0.99999999999955 must not read as 1)
    sla: bool = False  # shown only when the scenario has an `sla:` section (harness.sla)


def _nab(profile: str) -> Callable[[CellResult], Any]:
    return lambda r: r.score.nab.profiles[profile].score if r.score else None


def _det(field: str, at: str = REFERENCE_PROFILE) -> Callable[[CellResult], Any]:
    return lambda r: getattr(r.score.nab.detection[at], field) if r.score else None


def _lat(batch: str, field: str) -> Callable[[CellResult], Any]:
    return lambda r: getattr(getattr(r.timing, batch), field) if r.timing else None


def _backend(field: str) -> Callable[[CellResult], Any]:
    return lambda r: getattr(r.cell.backend, field) if r.cell.backend else None


def hardware(record: Any) -> str | None:
    """Where a task ran, in one cell of the table: its node's labels, then host, usable CPUs, memory, architecture."""
    node = getattr(record, "node", None)
    if node is None:
        return None
    labels = ",".join(f"{k}={v}" for k, v in sorted(node.labels.items()) if not k.startswith("ray.io/"))
    machine = f"{node.hostname} {node.cores} CPU {node.memory_bytes / 2**30:.1f} GiB {node.arch}"
    return f"{labels} {machine}" if labels else machine


TIMING_NOISE = "throughput_spread_pct"
B1_NOISE = "the batch-1 timing rounds' spread (timing.batch1.spread_pct in result.json)"

COLUMNS: tuple[Column, ...] = (
    Column("cell", "the cell id: the detector label, then `.param-value` for each grid axis, then the backend", value=lambda r: r.cell.id),
    Column("detector", "the detector label", value=lambda r: r.cell.detector),
    Column("params", "every parameter of the cell, as `key=value`", value=lambda r: " ".join(f"{k}={v}" for k, v in r.cell.params.items())),
    Column("target", "the scenario target (node group, by labels) the cell ran on", value=lambda r: r.cell.target, target=True),
    Column("status", "`ok`, `failed` (see `error`) or `pending` (a task never finished); `--resume` reruns every task not `ok`", value=lambda r: r.status.value),
    Column("nab_standard", "NAB v1.1 normalised score, standard profile (100 = perfect, 0 = the null detector), at its threshold", "points", "higher", DETERMINISTIC, _nab(REFERENCE_PROFILE)),
    Column("nab_reward_low_FP_rate", "the same, reward_low_FP_rate profile", "points", "higher", DETERMINISTIC, _nab("reward_low_FP_rate")),
    Column("nab_reward_low_FN_rate", "the same, reward_low_FN_rate profile", "points", "higher", DETERMINISTIC, _nab("reward_low_FN_rate")),
    Column("nab_standard_cv", "NAB standard with each category's files scored at the threshold optimised on the other "
           "categories: the honest number (docs/thresholds.md)", "points", "higher", DETERMINISTIC,
           lambda r: r.score.cross_validated.get(REFERENCE_PROFILE) if r.score and r.score.cross_validated else None),
    Column("cv_gap", "nab_standard - nab_standard_cv: what fitting the threshold to the labels it is judged on was worth",
           "points", None, value=lambda r: r.score.nab.profiles[REFERENCE_PROFILE].score - r.score.cross_validated[REFERENCE_PROFILE]
           if r.score and r.score.cross_validated else None),
    Column("backend", "where the model ran: `torch`, `onnxruntime`, `openvino`", value=_backend("backend"), backend=True),
    Column("precision", "the model's numeric precision: `fp32`, `int8`, `bf16`, `fp16`", value=_backend("precision"), backend=True),
    Column("pruning", "what the backend entry pruned: `magnitude` or `structured` and the share removed (empty: none)",
           value=lambda r: f"{r.cell.pruning.prune} {r.cell.pruning.sparsity:g}" if r.cell.pruning else "", backend=True),
    Column("weights_nonzero", "non-zero weights of the last pruned model (magnitude pruning keeps the shapes: the zeros are still stored)",
           "weights", "lower", DETERMINISTIC,
           lambda r: (r.score.backend_info or {}).get("pruning", {}).get("weights_nonzero") if r.score else None, backend=True),
    Column("f1", "event-based F1 at the standard profile's threshold (docs/metrics.md)", "", "higher", DETERMINISTIC, _det("f1")),
    Column("alert_precision", "detected windows / (detected windows + false-positive alert events)", "", "higher", DETERMINISTIC, _det("precision")),
    Column("recall", "detected windows / windows", "", "higher", DETERMINISTIC, _det("recall")),
    Column("recall_by_kind", "windows detected / windows of each anomaly kind, at the same threshold, when the corpus "
           "names its windows' kinds (labels/anomaly_types.json: the embedded corpus, `harness corpus inject`)",
           value=lambda r: ", ".join(f"{k} {d}/{n}" for k, (d, n) in r.score.recall_by_kind.items())
           if r.score and r.score.recall_by_kind else None, anomaly_kinds=True),
    Column("range_f1", "range-based F1 (Tatbul et al. 2018) at the same threshold", "", "higher", DETERMINISTIC, _det("range_f1")),
    Column("range_precision", "range-based precision: the share of each alert's extent inside windows", "", "higher", DETERMINISTIC, _det("range_precision")),
    Column("range_recall", "range-based recall: half for flagging a window, half for covering it", "", "higher", DETERMINISTIC, _det("range_recall")),
    Column("latency_mean_s", "mean seconds from a detected window's first row to its first detection", "s", "lower", DETERMINISTIC, _det("latency_mean_s")),
    Column("fp_events", "false-positive alert events at the same threshold", "events", "lower", DETERMINISTIC, _det("fp_events")),
    Column("f1_best", "event-based F1 at the threshold that maximises it", "", "higher", DETERMINISTIC, _det("f1", "best_f1")),
    Column("threshold", "the standard profile's threshold", value=lambda r: r.score.nab.profiles[REFERENCE_PROFILE].threshold if r.score else None, exact=True),
    Column("nab_standard_delta_pct", "NAB standard vs the same model's torch fp32 row", "%", "higher", DETERMINISTIC, backend=True),
    Column("latency_b1_p50_ms", "milliseconds per `infer` call at batch 1, median (docs/timing.md)", "ms", "lower", B1_NOISE, _lat("batch1", "p50_ms"), backend=True),
    Column("latency_b1_p95_ms", "the same, 95th percentile", "ms", "lower", B1_NOISE, _lat("batch1", "p95_ms"), backend=True),
    Column("latency_b1_p99_ms", "the same, 99th percentile", "ms", "lower", B1_NOISE, _lat("batch1", "p99_ms"), backend=True),
    Column("batch", "the large batch (`timing.batch`)", "windows", value=_lat("batchN", "batch"), backend=True),
    Column("latency_bN_p50_ms", "milliseconds per call at the large batch, median", "ms", "lower", TIMING_NOISE, _lat("batchN", "p50_ms"), backend=True),
    Column("latency_bN_p95_ms", "the same, 95th percentile", "ms", "lower", TIMING_NOISE, _lat("batchN", "p95_ms"), backend=True),
    Column("latency_bN_p99_ms", "the same, 99th percentile", "ms", "lower", TIMING_NOISE, _lat("batchN", "p99_ms"), backend=True),
    Column("throughput_eps", "events (windows) scored per second at the large batch: `batch / p50`", "events/s", "higher", TIMING_NOISE, _lat("batchN", "events_per_s"), backend=True),
    Column("throughput_b1_eps", "the same at batch 1", "events/s", "higher", B1_NOISE, _lat("batch1", "events_per_s"), backend=True),
    Column("speedup_vs_fp32", "throughput vs the same model's torch fp32 row, at the large batch", "x", "higher", TIMING_NOISE, backend=True),
    Column("speedup_b1_vs_fp32", "the same at batch 1", "x", "higher", B1_NOISE, backend=True),
    Column("speedup_vs_backend_fp32", "throughput vs the same model's fp32 row on the same backend: what the precision itself buys", "x", "higher", TIMING_NOISE, backend=True),
    Column("throughput_spread_pct", "(max - min) / median of the large-batch timing rounds' medians: a speedup smaller than this is noise", "%", "lower", value=_lat("batchN", "spread_pct"), backend=True),
    Column("model_bytes", "size of what the backend loads (ONNX file, OpenVINO IR, torch state dict)", "bytes", "lower", DETERMINISTIC, lambda r: r.score.model_bytes if r.score else None, backend=True),
    Column("gate", "int8/bf16/fp16 rows against the torch fp32 row: `PASS`, `FAIL: <why>`, or `n/a: <why>` (see below)", backend=True),
    Column("gate_vs_backend", "the same verdict with the speed measured against the fp32 row of the same runtime: what the "
           "precision itself buys", backend=True),
    Column("sla", "the cell against the scenario's `sla:` objectives (docs/architecture.md#deployment-slas): `PASS`, "
           "`FAIL: <objective> <measured> > <target>`, or `NOT MEASURED: <objective> (<why>)`", sla=True),
    Column("sla_met", "the verdict as a figure the history judges: 1 PASS, 0 FAIL, empty NOT MEASURED", "", "higher", VERDICT, sla=True),
    Column("sla_p95_ms", "p95 of the worst fixed-rate load run on the client's path (http, else handle), the replica-kill run "
           "left out: judged by `p95_ms`", "ms", "lower", "load runs' per-second spread", sla=True),
    Column("sla_events_per_s", "the highest goodput of a load run (fixed-rate or the peak's) that kept `p95_ms` and "
           "`max_error_rate`: judged by `min_events_per_s`", "events/s", "higher", "load runs' per-second spread", sla=True),
    Column("sla_error_rate", "(errors + shed + dropped) / requests due, worst fixed-rate run: judged by `max_error_rate`",
           "", "lower", "load runs", sla=True),
    Column("sla_recovery_s", "seconds from the replica kill to the end of the last second with errors or a p95 over "
           "`load.slo_p95_ms`: judged by `max_recovery_s`", "s", "lower", "machine load", sla=True),
    Column("sla_nab_standard_cv", "nab_standard_cv, judged by `min_nab_standard_cv`", "points", "higher", DETERMINISTIC, sla=True),
    Column("sla_quantized_loss_pct", "the NAB standard a build loses vs its model's fp32 reference (the torch "
           "fp32 row, else its own runtime's fp32 row), judged by `max_quantized_loss_pct`", "%", "lower", DETERMINISTIC, sla=True),
    Column("scoring_eps", "records the scoring task got through per second on its node: corpus rows / detection time "
           "(training, likelihood and inference included; no backend needed)", "events/s", "higher", "machine load",
           lambda r: r.score.rows / r.score.detect_s if r.score and r.score.detect_s else None),
    Column("seconds", "the cell's tasks' wall time on their workers (scoring, and timing for a backend cell)", "s", "lower", "machine load", lambda r: r.seconds or None),
    Column("hardware", "where the scoring task ran: node labels, host, CPUs it could use, memory it could use, architecture",
           value=lambda r: hardware(r.tasks.get("score"))),
    Column("error", "the first line of a failed task's error", value=lambda r: r.error),
)

BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}


def columns(with_backends: bool, with_targets: bool = False, with_anomaly_kinds: bool = False,
            with_sla: bool = False) -> list[Column]:
    return [c for c in COLUMNS if (with_backends or not c.backend) and (with_targets or not c.target)
            and (with_anomaly_kinds or not c.anomaly_kinds) and (with_sla or not c.sla)]


# --- the serving table (serving.csv): one row per load run of a served variant ---------------------------------


@dataclass(frozen=True)
class LoadRow:
    """One row of the serving table: a cell's load result, one of its runs (a rate, a number of clients, or the
    run at the peak the search found) on one path."""

    result: CellResult
    path: str
    run: str  # "rate 40", "clients 8", "peak"
    summary: Any  # harness.load.LoadSummary, or None (a peak search that found no passing rate)

    @property
    def load(self) -> Any:
        return self.result.load

    def peak(self) -> Any:
        return next((p for p in self.load.peaks if p.path == self.path), None) if self.load else None


def _run(field: str) -> Callable[[LoadRow], Any]:
    return lambda r: getattr(r.summary, field) if r.summary is not None else None


def _ms(field: str) -> Callable[[LoadRow], Any]:
    return lambda r: getattr(r.summary.latency_ms, field) if r.summary is not None else None


LOAD_NOISE = "the per-second series in result.json (load.points[].summary.per_second)"
LOAD_COLUMNS: tuple[Column, ...] = (
    Column("cell", "the served variant's cell id", value=lambda r: r.result.cell.id),
    Column("target", "the target (node group) its replicas ran on", value=lambda r: r.result.cell.target, target=True),
    Column("path", "`http`: through Serve's HTTP proxy; `handle`: a DeploymentHandle inside the cluster (no proxy)", value=lambda r: r.path),
    Column("run", "`rate R` (open loop, R requests/s offered), `clients C` (closed loop) or `peak` (the run at the peak "
           "rate); ` (replica killed)` marks the run that lost its replica (`kill_replica_at_s`), ` #2` a rate run again",
           value=lambda r: r.run),
    Column("offered_rps", "requests per second offered (open loop)", "requests/s", value=_run("offered_rps")),
    Column("achieved_rps", "requests per second scored (answered 200 with one finite score per event) in the measured window", "requests/s", "higher", LOAD_NOISE, _run("achieved_rps")),
    Column("offered_eps", "events per second offered: offered_rps x events per request", "events/s",
           value=lambda r: r.summary.offered_rps * r.summary.events_per_request if r.summary is not None and r.summary.offered_rps else None),
    Column("achieved_eps", "goodput: events per second scored and answered", "events/s", "higher", LOAD_NOISE, _run("achieved_eps")),
    Column("answered_rps", "throughput: requests per second answered, whatever the status (scored, shed or refused)", "requests/s", None, LOAD_NOISE, _run("answered_rps")),
    Column("p50_ms", "request latency, median, from each request's intended send time (docs/load.md)", "ms", "lower", LOAD_NOISE, _ms("p50")),
    Column("p90_ms", "the same, 90th percentile", "ms", "lower", LOAD_NOISE, _ms("p90")),
    Column("p95_ms", "the same, 95th percentile", "ms", "lower", LOAD_NOISE, _ms("p95")),
    Column("p99_ms", "the same, 99th percentile", "ms", "lower", LOAD_NOISE, _ms("p99")),
    Column("max_ms", "the same, maximum", "ms", "lower", LOAD_NOISE, _ms("max")),
    Column("answered_p99_ms", "99th percentile latency of every answer, shed and refused requests included", "ms", "lower", LOAD_NOISE,
           lambda r: r.summary.answered_latency_ms.p99 if r.summary is not None else None),
    Column("errors", "requests sent that failed: a status other than 200 (a 503 without Retry-After included), a 200 without one finite "
           "score per event (`bad_response`), timeouts, connection errors", "requests", "lower", value=_run("errors")),
    Column("shed", "requests the service shed under overload: answered 503 with Retry-After", "requests", "lower", value=_run("shed")),
    Column("dropped", "requests due that the generator could not send on time (docs/load.md)", "requests", "lower", value=_run("dropped")),
    Column("valid", "`VALID`, or `INVALID: <rules broken>` (docs/load.md)",
           value=lambda r: None if r.summary is None else ("VALID" if r.summary.valid else "INVALID: " + "; ".join(r.summary.reasons))),
    Column("peak_eps_at_slo", "the highest events/s whose p95 met `load.slo_p95_ms` with the run VALID, on this path (find_peak)", "events/s", "higher", LOAD_NOISE,
           lambda r: r.peak().peak_eps if r.peak() is not None else None),
    Column("nab_standard", "the variant's NAB standard score (its scoring task)", "points", "higher", DETERMINISTIC, lambda r: r.result.score.nab.profiles[REFERENCE_PROFILE].score if r.result.score else None),
    Column("inprocess_eps", "events/s the same variant scores in one process on the same requests (no Serve, no HTTP)", "events/s", "higher", "one 2 s measurement",
           lambda r: r.load.inprocess_eps if r.load else None),
    Column("served_vs_inprocess", "achieved_eps / inprocess_eps: what serving keeps of the in-process throughput", "x", "higher", LOAD_NOISE,
           lambda r: r.summary.achieved_eps / r.load.inprocess_eps if r.summary is not None and r.load and r.load.inprocess_eps else None),
    Column("network", "the shaping on the path from the load generators to the service's node (`harness cluster up`): "
           "delay ± jitter, bandwidth, method (`netem` or `relay`)", value=lambda r: r.load.network.describe() if r.load and r.load.network else None, target=True),
    Column("warmup_s", "seconds to warm (train) every stream before the measured runs", "s", "lower", "machine load", lambda r: r.load.warmup.seconds if r.load else None),
    Column("flame_graphs", "py-spy flame graphs of the replicas and the proxy (`load.profile`), in the cell's folder",
           value=lambda r: " ".join(f"cells/{r.result.cell.id}/{f}" for f in r.load.profiles if f.startswith(f"flame-{r.path}-")) if r.load else None),
    Column("error", "why the load task failed", value=lambda r: r.result.tasks["load"].error if "load" in r.result.tasks and r.load is None else None),
)
LOAD_BY_NAME: dict[str, Column] = {c.name: c for c in LOAD_COLUMNS}


# --- the threshold policies' table (thresholds.csv): one row per cell and policy ------------------------------

POLICY_COLUMNS: tuple[Column, ...] = (
    Column("cell", "the cell id", value=lambda x: x[0].cell.id),
    Column("policy", "`optimized` (NAB's threshold: an oracle), `fixed`, `rolling_quantile` or `spot`", value=lambda x: x[1]["policy"]),
    Column("oracle_params", "the candidate best on every file (for `optimized`: the threshold)", value=lambda x: x[1]["oracle_params"]),
    Column("nab_standard", "NAB standard of that candidate: an oracle, chosen on the labels it is judged on", "points", "higher", DETERMINISTIC,
           lambda x: x[1]["nab_standard"]),
    Column("nab_standard_cv", "each category at the candidate best on the other categories: the honest number", "points", "higher",
           DETERMINISTIC, lambda x: x[1]["nab_standard_cv"]),
    Column("cv_gap", "nab_standard - nab_standard_cv", "points", value=lambda x: x[1]["nab_standard"] - x[1]["nab_standard_cv"]),
    Column("f1", "event-based F1 of the oracle candidate's alerts", "", "higher", DETERMINISTIC, lambda x: x[1]["f1"]),
    Column("alert_precision", "detected windows / (detected windows + false-positive alert events)", "", "higher", DETERMINISTIC,
           lambda x: x[1]["precision"]),
    Column("recall", "detected windows / windows", "", "higher", DETERMINISTIC, lambda x: x[1]["recall"]),
    Column("latency_mean_s", "mean seconds from a window's first row to its first alert", "s", "lower", DETERMINISTIC,
           lambda x: x[1]["latency_mean_s"]),
    Column("fp_events", "false-positive alert events", "events", "lower", DETERMINISTIC, lambda x: x[1]["fp_events"]),
    Column("alerts_per_1k", "records the oracle candidate alerts on, per 1,000 scored records: the alert rate an operator "
           "receives (an alert storm: docs/playbooks.md)", "per 1k events", "lower", DETERMINISTIC,
           lambda x: 1000.0 * x[1]["alert_rows"] / x[1]["scored_rows"] if x[1].get("alert_rows") is not None and x[1].get("scored_rows") else None),
    Column("folds", "the categories whose candidate (chosen on the other categories) differs from the oracle's; `same` "
           "when none does", value=lambda x: "; ".join(f"{k}: {v}" for k, v in x[1]["folds"].items() if v != x[1]["oracle_params"]) or "same"),
)
