"""Typed, versioned records of a run: the manifest, and one `CellResult` per cell holding a `TaskRecord` per task
kind (score, timing, load). `harness.results.folder` is the only module that reads and writes them.

Bump `SCHEMA_VERSION` when a stored field changes meaning or shape: a run folder of another version is refused
on resume, with one line, instead of being misread.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, computed_field

from harness.load.summary import LoadSummary
from harness.scenario import Cell
from harness.scoring.nab import DetectionMetrics, ProfileScore

SCHEMA_VERSION = 3


class Status(str, Enum):
    """Where a task, or a cell (all its tasks), stands."""

    OK = "ok"
    FAILED = "failed"
    PENDING = "pending"  # not run yet, or interrupted before it finished


class RunStatus(str, Enum):
    RUNNING = "running"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # NaN stays NaN (a latency of no window)


class NodeFacts(_Record):
    """Where a task ran: the Ray node and the machine under it."""

    node_id: str
    labels: dict[str, str] = Field(default_factory=dict)
    hostname: str
    cpu_model: str
    cores: int  # logical CPUs the task could run on (its affinity: a node's cpuset)
    ray_cpus: float | None = None  # CPUs the Ray node offers
    memory_bytes: int  # memory the task could use: the machine's, or its cgroup's limit
    arch: str


class NabResult(_Record):
    """One detector's NAB report: every profile's score, and the detection metrics at each profile's threshold
    and at the F1-best one (`best_f1`). Fields as in `harness.scoring.nab`."""

    profiles: dict[str, ProfileScore]
    detection: dict[str, DetectionMetrics]


class PolicyFigures(_Record):
    """A threshold policy over a cell's scores (docs/thresholds.md): its alerts scored by NAB as binary detections,
    with the candidate (parameters) best on every file (the oracle) and each category's best on the others."""

    policy: str  # its type: fixed, rolling_quantile, spot
    oracle_params: str  # the candidate best on every file
    nab_standard: float  # that candidate's NAB standard score (an oracle, like NAB's optimised threshold)
    nab_standard_cv: float  # each category with the candidate best on the other categories
    folds: dict[str, str]  # category -> the candidate it ran with
    f1: float
    precision: float
    recall: float
    latency_mean_s: float
    fp_events: int
    seconds: float  # applying and scoring every candidate
    alert_rows: int | None = None  # scored records the oracle candidate alerted on (None: a result from before it was kept)
    scored_rows: int | None = None  # records after each file's probation: what alert_rows is out of

    @property
    def alerts_per_1k(self) -> float | None:
        """Alerts per 1,000 scored events: what an operator receives, whatever NAB makes of them (an alert storm)."""
        return 1000.0 * self.alert_rows / self.scored_rows if self.alert_rows is not None and self.scored_rows else None


class ScoreResult(_Record):
    """A scoring task: the detector over every corpus file, then NAB scoring."""

    kind: Literal["score"] = "score"
    nab: NabResult
    files: int
    rows: int
    probation_percent: float
    detect_s: float  # running the detector over the corpus (training and inference included)
    prepare_s: float | None = None  # of detect_s: exporting / quantizing / compiling models for the backend
    model_bytes: int | None = None
    backend_info: dict[str, Any] | None = None  # settings, threads, versions, cache hits, output error vs torch
    cross_validated: dict[str, float] | None = None  # per profile: NAB score at thresholds chosen on other categories
    cv_folds: dict[str, dict[str, float]] | None = None  # per profile: category -> the threshold its files were scored at
    policies: list[PolicyFigures] = Field(default_factory=list)  # the scenario's threshold policies (scoring.policies)
    recall_by_kind: dict[str, tuple[int, int]] | None = None  # kind -> (windows detected, windows) at the standard threshold


class LatencyFigures(_Record):
    """Per-call latency at one batch size (milliseconds), from harness.timing.Latency.to_dict."""

    batch: int
    iterations: int
    duration_s: float
    mean_ms: float
    stdev_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    rounds_p50_ms: list[float]
    spread_pct: float
    events_per_s: float


class TimingResult(_Record):
    """A timing task: latency of the backend at batch 1 and at the large batch (docs/timing.md)."""

    kind: Literal["timing"] = "timing"
    batch1: LatencyFigures
    batchN: LatencyFigures
    sweep: dict[int, LatencyFigures] = Field(default_factory=dict)  # timing.sweep's batch sizes, one round each
    file: str  # whose model and windows were timed
    settings: dict[str, Any]
    exclusive: bool  # timed alone on its node
    cache: str | None = None  # "hit": the artefacts the scoring task cached were reused


class WarmupFigures(_Record):
    """Streams trained before any load is measured: each sent its events until the service said it had scored
    (harness.load.warmup); `events` in all."""

    seconds: float
    events: int
    streams: int


class LoadPoint(_Record):
    """One measured load run (a rate, or a number of clients) on one path."""

    path: Literal["http", "handle"]
    summary: LoadSummary


class PeakFigures(_Record):
    """The highest rate whose p95 met the SLO with the run VALID, as the peak search found it on one path."""

    path: Literal["http", "handle"]
    slo_p95_ms: float
    peak_rps: float | None
    peak_eps: float | None
    summary: LoadSummary | None  # the run at the peak rate
    converged: bool
    probes: list[dict[str, Any]]  # every rate tried: rps, passed, p95_ms, error_rate, valid, why
    runs: list[LoadSummary] = Field(default_factory=list)  # those runs' summaries (per-second series left out)


class FaultFigures(_Record):
    """A replica killed during the first run: the errors the run saw and how long until they stopped."""

    replica: str
    at_s: float  # into the measured window
    killed: bool
    errors: int
    recovery_s: float  # from the kill to the end of the last second with errors or a p95 over the SLO
    recovered: bool | None = None  # False: the run's last second was still bad, so recovery_s is only a lower bound


class NetworkFigures(_Record):
    """The shaping injected on the path from the load generators to the service's node (`harness cluster up`)."""

    node: str  # the topology's node the service was called on
    method: str  # "netem", "relay" (a delaying TCP relay in the node's namespace), or "none"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_mbit: float | None = None

    def describe(self) -> str:
        if self.method == "none":
            return f"{self.node}: no shaping"
        rate = f", {self.rate_mbit:g} Mbit/s" if self.rate_mbit else ""
        return f"{self.node}: {self.delay_ms:g} ms ± {self.jitter_ms:g} ms{rate} ({self.method})"


class LoadResult(_Record):
    """A load task: the variant on Ray Serve, under load (docs/load.md)."""

    kind: Literal["load"] = "load"
    deploy_s: float
    warmup: WarmupFigures
    inprocess_eps: float  # a StreamTable in one process, same requests, no Serve
    serve: dict[str, Any]  # the ServeSpec the deployment ran with
    serve_environment: dict[str, str]  # Ray Serve's throughput-related environment settings
    events_per_request: int
    encoding: str
    streams: int
    points: list[LoadPoint] = Field(default_factory=list)
    peaks: list[PeakFigures] = Field(default_factory=list)
    fault: FaultFigures | None = None
    profiles: list[str] = Field(default_factory=list)  # flame graph files in the cell's folder
    network: NetworkFigures | None = None  # shaping between generators and service (a `harness cluster up` topology)


TaskResult = Union[ScoreResult, TimingResult, LoadResult]


class TaskRecord(_Record):
    kind: str
    status: Status
    started_at: str | None = None
    seconds: float = 0.0
    node: NodeFacts | None = None
    error: str | None = None  # the first line of the error of a failed task
    traceback: str | None = None
    result: TaskResult | None = Field(None, discriminator="kind")


class CellResult(_Record):
    """Everything recorded about one cell: its definition and one record per task kind it needs."""

    schema_version: int = SCHEMA_VERSION
    cell: Cell
    kinds: list[str]  # the task kinds this cell needs, in order
    tasks: dict[str, TaskRecord] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Status:
        states = [self.tasks[k].status if k in self.tasks else Status.PENDING for k in self.kinds]
        if Status.FAILED in states:
            return Status.FAILED
        return Status.OK if all(s == Status.OK for s in states) else Status.PENDING

    @classmethod
    def from_data(cls, data: Any) -> "CellResult":
        """A result.json's content; its `status`, derived and written for readers, is recomputed instead."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "status"}
        return cls.model_validate(data)

    @property
    def error(self) -> str:
        """The first failed task's error, prefixed with its kind unless it is the scoring."""
        for k in self.kinds:
            t = self.tasks.get(k)
            if t is not None and t.status == Status.FAILED:
                return t.error or "" if k == "score" else f"{k}: {t.error}"
        return ""

    @property
    def score(self) -> ScoreResult | None:
        t = self.tasks.get("score")
        return t.result if t is not None and t.status == Status.OK else None  # type: ignore[return-value]

    @property
    def timing(self) -> TimingResult | None:
        t = self.tasks.get("timing")
        return t.result if t is not None and t.status == Status.OK else None  # type: ignore[return-value]

    @property
    def load(self) -> LoadResult | None:
        t = self.tasks.get("load")
        return t.result if t is not None and t.status == Status.OK else None  # type: ignore[return-value]

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.tasks.values())


class Manifest(BaseModel):
    """What a run records about itself, so that a row of its table can be reproduced and a resume checked."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    scenario: dict[str, Any]  # file, given (the text), resolved (defaults filled in)
    corpus: dict[str, Any]  # root, files, rows, fingerprint, only
    cells: list[str]
    command: list[str]
    environment: dict[str, Any]  # code identity, packages, python, platform, CPU
    ray: dict[str, Any] | None = None  # address, version, resources, nodes
    started_at: str
    resumes: list[dict[str, Any]] = Field(default_factory=list)  # each --resume: at, command, code identity
    finished_at: str | None = None
    status: RunStatus = RunStatus.RUNNING
