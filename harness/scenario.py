"""Scenario files: YAML validated by a pydantic schema, expanded into cells.

Every error becomes one `InputError` line naming the file, the field and what was expected.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.backends.base import BackendSpec
from harness.errors import InputError
from harness.load.validity import ValidityRules
from harness.serving import ServeSpec

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticCorpus(_Strict):
    """The embedded synthetic corpus, generated from a seed: needs no download."""

    seed: int = 7
    rows: int = Field(4032, ge=500, le=200_000)


class CorpusSpec(_Strict):
    """Exactly one of: `synthetic` (embedded) or `path` (a folder in NAB's layout); optionally narrowed to some
    categories or files (`only`), which NAB's normalisation then counts alone."""

    synthetic: SyntheticCorpus | None = None
    path: str | None = None
    only: list[str] = Field(default_factory=list, description="categories (realTraffic) or files (realTraffic/speed_6005.csv)")

    @model_validator(mode="after")
    def _one_source(self) -> "CorpusSpec":
        if (self.synthetic is None) == (self.path is None):
            raise ValueError("give exactly one of 'synthetic' or 'path'")
        return self


class DetectorSpec(_Strict):
    type: str
    label: str | None = Field(None, pattern=NAME)
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("type", mode="before")
    @classmethod
    def _named(cls, v: Any) -> Any:
        if v is None:  # YAML reads a bare `null` as nothing
            raise ValueError('expected a detector name, got nothing (write "null" in quotes for the null detector)')
        return v

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        from harness.detectors import resolve_detector

        resolve_detector(v)
        return v

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for k, values in v.items():
            if not values:
                raise ValueError(f"grid {k!r} needs at least one value")
        return v

    @property
    def name(self) -> str:
        from harness.detectors import default_label

        return self.label or default_label(self.type)


class TimingSpec(_Strict):
    """How backend latency is measured (docs/timing.md)."""

    batch: int = Field(256, ge=2, description="the large batch; batch 1 is always timed too")
    warmup: int = Field(20, ge=0)
    min_iterations: int = Field(100, ge=1)
    min_duration_s: float = Field(1.0, ge=0.0, description="per round and batch size")
    rounds: int = Field(3, ge=1, le=20, description="rounds of both batch sizes, alternating; samples pooled")
    sweep: list[int] = Field(
        default_factory=list, max_length=12,
        description="more batch sizes, each timed in one round after the others: the batch axis of the precision "
        "crossover plot (crossover.png)",
    )
    exclusive: bool = Field(
        True,
        description="time each backend cell alone on a node, after scoring (reserves all its CPUs); false: time "
        "inside the cell, beside whatever else runs (faster, noisier)",
    )

    @field_validator("sweep")
    @classmethod
    def _sweep_sizes(cls, v: list[int]) -> list[int]:
        if any(b < 1 or b > 65536 for b in v):
            raise ValueError("sweep batch sizes must lie in 1..65536")
        return sorted(set(v))


class PolicySpec(_Strict):
    """A threshold policy applied to every cell's scores (docs/thresholds.md); `grid` values are the candidates
    its parameters are chosen among (on all files for the oracle, on the other categories for the honest number)."""

    type: Literal["fixed", "rolling_quantile", "spot"]
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    def candidates(self) -> list[Any]:
        from harness.thresholds import POLICIES

        keys = list(self.grid)
        return [POLICIES[self.type](**{**self.params, **dict(zip(keys, combo))})
                for combo in (itertools.product(*(self.grid[k] for k in keys)) if keys else [()])]

    @model_validator(mode="after")
    def _valid(self) -> "PolicySpec":
        for k, values in self.grid.items():
            if not values:
                raise ValueError(f"grid {k!r} needs at least one value")
        try:
            self.candidates()
        except ValidationError as exc:
            field, msg = _first_error(exc)
            raise ValueError(f"{field}: {msg}") from None
        return self


class ScoringSpec(_Strict):
    thresholds: str = Field("optimize", description="'optimize', or a thresholds file in NAB's format")
    probation_percent: float = Field(0.15, ge=0.0, lt=1.0)
    policies: list[PolicySpec] = Field(default_factory=list, description="threshold policies to apply to every cell's scores")


class LoadSpec(_Strict):
    """A scenario's load test of every variant on Ray Serve (docs/load.md). Each variant is deployed once, its
    streams warmed (trained) outside the measured window, then loaded at each rate (open loop) or concurrency
    (closed loop), on each path, and optionally searched for its peak rate at the SLO."""

    paths: list[Literal["http", "handle"]] = Field(["http", "handle"], min_length=1,
                                                   description="http: through Serve's proxy; handle: a DeploymentHandle inside the cluster")
    mode: Literal["open", "closed"] = "open"
    arrivals: Literal["constant", "poisson"] = "constant"
    rates: list[float] = Field(default_factory=list, description="open loop: requests/s, one measured run each")
    concurrency: list[int] = Field(default_factory=list, description="closed loop: virtual clients, one run each")
    think_time_s: float = Field(0.0, ge=0.0)
    events_per_request: int = Field(1000, ge=1)
    encoding: Literal["json", "msgpack"] = "json"
    streams: int = Field(8, ge=1, description="corpus files replayed as streams (the first N)")
    duration_s: float = Field(30.0, gt=0.0, description="measured window of each run")
    warmup_s: float = Field(5.0, ge=0.0, description="load before the measured window of each run (not recorded)")
    slo_p95_ms: float = Field(100.0, gt=0.0)
    find_peak: bool = Field(False, description="search the highest rate whose p95 meets the SLO, VALID")
    peak_start_rps: float = Field(20.0, gt=0.0)
    peak_max_runs: int = Field(8, ge=2, le=30)
    peak_precision: float = Field(0.05, gt=0.0, lt=1.0, description="relative width at which the search stops")
    peak_duration_s: float | None = Field(None, gt=0.0, description="measured window of each probe (default duration_s)")
    generators: int = Field(1, ge=1, le=16, description="load generator actors (their histograms are merged)")
    max_in_flight: int = Field(256, ge=1)
    timeout_s: float = Field(10.0, gt=0.0)
    profile: bool = Field(False, description="py-spy flame graphs of every replica and the proxy during the first run")
    kill_replica_at_s: float | None = Field(None, ge=0.0, description="fault: kill shard 0's replica this many "
                                            "seconds into the first run's measured window")
    rules: ValidityRules = Field(default_factory=ValidityRules)

    @model_validator(mode="after")
    def _something_to_run(self) -> "LoadSpec":
        if self.mode == "open" and not self.rates and not self.find_peak:
            raise ValueError("open loop needs 'rates' or 'find_peak: true'")
        if self.mode == "closed" and not self.concurrency:
            raise ValueError("closed loop needs 'concurrency'")
        if self.find_peak and self.mode != "open":
            raise ValueError("find_peak searches rates: it needs mode 'open'")
        return self


class TargetSpec(_Strict):
    """A node group cells run on, chosen by Ray node labels (`ray start --labels tier=edge`), with the limits
    its tasks keep to there."""

    labels: dict[str, str] = Field(min_length=1, description="node labels a node of this target has, e.g. {tier: edge}")
    cpus: float | None = Field(None, gt=0.0, description="CPUs a scoring task reserves here (default: the backend's threads, 1 without)")
    threads: int | None = Field(None, ge=1, le=64, description="backend intra-op threads here (replaces the backend entry's threads)")
    memory: int | None = Field(None, gt=0, description="bytes of memory each task reserves here (Ray's memory resource); "
                               "'512MiB', '2GiB' and '1.5GB' are read as bytes")

    @field_validator("labels")
    @classmethod
    def _label_values(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?", str(key)) or not re.fullmatch(r"[A-Za-z0-9._-]*", str(value)):
                raise ValueError(f"label {key}={value}: expected letters, digits, '.', '_' or '-'")
        return {str(k): str(val) for k, val in v.items()}

    @field_validator("memory", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> Any:
        return parse_bytes(v) if isinstance(v, str) else v


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'512MiB', '2GiB', '1.5GB', '1000' -> bytes; ValueError naming the expected form otherwise."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size like 512MiB, 2GiB or 1.5GB, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


class Scenario(_Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    corpus: CorpusSpec = Field(default_factory=lambda: CorpusSpec(synthetic=SyntheticCorpus()))
    detectors: list[DetectorSpec] = Field(min_length=1)
    backends: list[BackendSpec] = Field(default_factory=list)
    timing: TimingSpec = Field(default_factory=TimingSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    serve: ServeSpec | None = Field(None, description="how a variant is deployed on Ray Serve (docs/serving.md)")
    load: LoadSpec | None = Field(None, description="load-test every variant on Ray Serve (docs/load.md)")
    targets: dict[str, TargetSpec] = Field(default_factory=dict, description="node groups every cell runs on "
                                           "(each cell crossed with each target); none: wherever Ray puts it")

    def target_labels(self, cell: "Cell") -> dict[str, str]:
        """The node labels of the target `cell` runs on (none without a target)."""
        return dict(self.targets[cell.target].labels) if cell.target else {}

    @field_validator("targets")
    @classmethod
    def _target_names(cls, v: dict[str, TargetSpec]) -> dict[str, TargetSpec]:
        for name in v:
            if not re.fullmatch(NAME, name):
                raise ValueError(f"target name {name!r}: expected letters, digits, '.', '_' or '-'")
        return v

    @field_validator("backends")
    @classmethod
    def _distinct_backends(cls, v: list[BackendSpec]) -> list[BackendSpec]:
        tokens = [b.token for b in v]
        for i, t in enumerate(tokens):
            if t in tokens[:i]:
                raise ValueError(f"entries {tokens.index(t)} and {i} are the same backend ({t}); each entry must differ")
        return v


class ScenarioFieldError(ValueError):
    """A problem with one field of an otherwise well-formed scenario."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class Cell(BaseModel):
    """One row of the table: a detector with concrete parameters, and the backend its model runs on. The tasks
    that compute it (scoring, timing) come from harness.tasks."""

    id: str
    detector: str  # the detector's label
    type: str
    params: dict[str, Any]
    axes: dict[str, Any]  # the swept values that distinguish this cell
    backend: BackendSpec | None = None  # None: the detector's own (torch) inference, or no model at all
    target: str | None = None  # the scenario target (node group) its tasks run on; None: wherever Ray puts them


def _cell_token(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", str(value)) or "x"


def expand(scenario: Scenario) -> list[Cell]:
    """Cells: each detector crossed with the cartesian product of its grid, learned detectors with the
    scenario's backends, and everything with the scenario's targets (id suffix `@target`)."""
    from harness.detectors import resolve_detector

    cells: list[Cell] = []
    for i, spec in enumerate(scenario.detectors):
        keys = list(spec.grid)
        for combo in itertools.product(*(spec.grid[k] for k in keys)) if keys else [()]:
            axes = dict(zip(keys, combo))
            params = {**spec.params, **axes}
            cls = resolve_detector(spec.type)
            try:
                cls.Params.model_validate(params)
            except ValidationError as exc:
                field, msg = _first_error(exc)
                where = "grid" if field.split(".")[0] in axes else "params"
                raise ScenarioFieldError(f"detectors[{i}].{where}" + (f".{field}" if field else ""), msg) from None
            base_id = ".".join([spec.name] + [f"{_cell_token(k)}-{_cell_token(v)}" for k, v in axes.items()])
            for backend in (scenario.backends if cls.uses_backends and scenario.backends else [None]):
                cells.append(
                    Cell(
                        id=f"{base_id}.{backend.token}" if backend else base_id,
                        detector=spec.name,
                        type=spec.type,
                        params=params,
                        axes={**axes, **({"backend": backend.backend, "precision": backend.precision} if backend else {})},
                        backend=backend,
                    )
                )
    if scenario.targets:
        cells = [on_target(c, name, t) for c in cells for name, t in scenario.targets.items()]
    if scenario.backends and not any(c.backend for c in cells):
        raise ScenarioFieldError(
            "backends", "no detector here runs a model (lstm, autoencoder, or a LearnedDetector subclass); remove 'backends'"
        )
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"cells would share the id {dupes[0]!r}: give detectors distinct labels")
    return cells


def on_target(cell: Cell, name: str, target: TargetSpec) -> Cell:
    """`cell` on target `name`: its id gains `@name`, and its backend the target's thread count."""
    backend = cell.backend
    if backend is not None and target.threads is not None:
        backend = backend.model_copy(update={"threads": target.threads})
    return cell.model_copy(update={"id": f"{cell.id}@{name}", "target": name, "backend": backend,
                                   "axes": {**cell.axes, "target": name}})


def read_yaml_mapping(path: str | Path) -> tuple[dict, str]:
    """The file's text and its top-level mapping, or one clear InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path)
    if not path.is_file():
        raise InputError("expected a YAML file, got a folder", path)
    raw = path.read_bytes()
    if b"\0" in raw:
        raise InputError("expected a YAML text file, got binary data", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("expected a UTF-8 YAML text file, got binary data", path) from None
    if not text.strip():
        raise InputError("file is empty; expected a scenario mapping (name, corpus, detectors)", path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"invalid YAML{where}: {problem}", path) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping at the top level, got {_kind(data)}", path)
    return data, text


def _kind(value: Any) -> str:
    names = {list: "a list", str: "a string", type(None): "nothing", int: "an integer", float: "a number", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif "input" in err and err["type"].endswith("_type"):
        msg = f"{msg}, got {_kind(err['input'])}"
    return _loc(loc), msg


def load_scenario(
    path: str | Path, corpus_override: str | Path | None = None, only: list[str] | None = None
) -> tuple[Scenario, list[Cell], str]:
    """Parse, validate and expand a scenario file; `corpus_override` replaces its corpus with a NAB folder, and
    `only` (from --only) replaces the corpus's selection of categories and files."""
    path = Path(path)
    data, text = read_yaml_mapping(path)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        field, msg = _first_error(exc)
        raise InputError(msg, path, field or None) from None
    if corpus_override is not None:
        scenario.corpus = CorpusSpec(path=str(Path(corpus_override).resolve()), only=scenario.corpus.only)
    elif scenario.corpus.path is not None and not Path(scenario.corpus.path).is_absolute():
        scenario.corpus.path = str((path.parent / scenario.corpus.path).resolve())
    if only is not None:
        scenario.corpus.only = list(only)
    try:
        cells = expand(scenario)
    except ScenarioFieldError as exc:
        raise InputError(str(exc), path, exc.field) from None
    except ValueError as exc:
        raise InputError(str(exc), path, "detectors") from None
    if scenario.scoring.thresholds != "optimize":
        thresholds = Path(scenario.scoring.thresholds)
        if not thresholds.is_absolute():
            thresholds = (path.parent / thresholds).resolve()
        if not thresholds.is_file():
            raise InputError(f"thresholds file {thresholds} does not exist (or write 'optimize')", path, "scoring.thresholds")
        scenario.scoring.thresholds = str(thresholds)
    if scenario.serve is not None and scenario.serve.token_file is not None:
        from harness.tokens import read_token

        token_file = Path(scenario.serve.token_file)
        if not token_file.is_absolute():
            token_file = (path.parent / token_file).resolve()
        try:
            read_token(token_file, "serve.token_file")
        except InputError as exc:
            raise InputError(exc.detail, path, "serve.token_file") from None
        scenario.serve.token_file = str(token_file)
    return scenario, cells, text
