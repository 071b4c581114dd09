"""Scenario files: YAML validated by a pydantic schema, composed of each component's own settings (load, timing,
threshold policies, targets, serving, backends, pruning: each defined beside its component), and expanded into
cells.

Every error becomes one `InputError` line naming the file, the field and what was expected.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, ValidationInfo, field_validator, model_validator

from harness.backends import BackendSpec, as_spec
from harness.detectors.pruning import KEYS as PRUNING_KEYS
from harness.detectors.pruning import PruningSpec
from harness.errors import InputError, field_error, kind_of
from harness.load.settings import LoadSpec
from harness.sla.spec import Objectives, SlaEntry, SlaSpec
from harness.serving.config import ServeSpec, ServiceConfig, Variant
from harness.targets import TargetSpec, labels_for
from harness.thresholds.spec import PolicySpec
from harness.timing import TimingSpec
from harness.yamlfile import read_yaml_mapping

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


class ScoringSpec(_Strict):
    thresholds: str = Field("optimize", description="'optimize', or a thresholds file in NAB's format")
    probation_percent: float = Field(0.15, ge=0.0, lt=1.0)
    policies: list[PolicySpec] = Field(default_factory=list, description="threshold policies to apply to every cell's scores")


class Build(_Strict):
    """One `backends:` entry: the runtime a learned detector's model runs on, and the pruning done to it first.
    Written flat in the YAML ({backend: onnxruntime, precision: int8, prune: structured, sparsity: 0.5})."""

    backend: BackendSpec
    pruning: PruningSpec | None = None

    @property
    def token(self) -> str:
        """The cell-id part: the runtime's token, then the pruning's."""
        return build_token(self.backend, self.pruning)


def _entry(value: Any) -> Build:
    """A flat YAML backend entry split into its runtime and its pruning; errors name the entry's own keys."""
    if isinstance(value, Build):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"expected a backend entry (backend, precision...), got {kind_of(value)}")
    runtime, pruning = PruningSpec.split(value)
    return Build(backend=as_spec(runtime), pruning=pruning)


def _flat(build: Build) -> dict[str, Any]:
    """The entry as the YAML writes it (the manifest's resolved scenario reads like the scenario)."""
    return {**build.backend.model_dump(), **(build.pruning.model_dump() if build.pruning else {})}


BackendEntry = Annotated[Build, PlainValidator(_entry), PlainSerializer(_flat)]


class Scenario(_Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    corpus: CorpusSpec = Field(default_factory=lambda: CorpusSpec(synthetic=SyntheticCorpus()))
    detectors: list[DetectorSpec] = Field(min_length=1)
    backends: list[BackendEntry] = Field(default_factory=list)
    timing: TimingSpec = Field(default_factory=TimingSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    serve: ServeSpec | None = Field(None, description="how a variant is deployed on Ray Serve (docs/serving.md)")
    load: LoadSpec | None = Field(None, description="load-test every variant on Ray Serve (docs/load.md)")
    targets: dict[str, TargetSpec] = Field(default_factory=dict, description="node groups every cell runs on "
                                           "(each cell crossed with each target); none: wherever Ray puts it")
    sla: SlaEntry | None = Field(None, description="deployment objectives every cell is judged on, or one set per target "
                                "(docs/architecture.md#deployment-slas)")

    def target_labels(self, cell: "Cell") -> dict[str, str]:
        """The node labels of the target `cell` runs on (none without a target)."""
        return labels_for(self.targets, cell.target)

    @field_validator("targets")
    @classmethod
    def _target_names(cls, v: dict[str, TargetSpec]) -> dict[str, TargetSpec]:
        for name in v:
            if not re.fullmatch(NAME, name):
                raise ValueError(f"target name {name!r}: expected letters, digits, '.', '_' or '-'")
        return v

    @field_validator("sla")
    @classmethod
    def _sla_targets(cls, v: SlaSpec | None, info: ValidationInfo) -> SlaSpec | None:
        if v is not None:
            v.check_targets(list(info.data.get("targets") or {}))
        return v

    @field_validator("backends")
    @classmethod
    def _distinct_backends(cls, v: list[Build]) -> list[Build]:
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
    pruning: PruningSpec | None = None  # what its backend entry prunes after training

    @model_validator(mode="before")
    @classmethod
    def _pruning_apart(cls, data: Any) -> Any:
        """A cell stored before pruning was the detector's kept `prune`, `sparsity` and `prune_epochs` in its
        backend: they are read as its pruning."""
        backend = data.get("backend") if isinstance(data, dict) else None
        if isinstance(backend, dict) and any(k in backend for k in PRUNING_KEYS):
            runtime, pruning = PruningSpec.split(backend)
            data = {**data, "backend": runtime, "pruning": data.get("pruning") or pruning}
        return data

    @property
    def build(self) -> str:
        """Its backend entry's part of the id (`onnxruntime-int8-dynamic.prune-structured.sparsity-0.5`); '' without."""
        return "" if self.backend is None else build_token(self.backend, self.pruning)

    def service(self, serve: ServeSpec | None, probation_percent: float, labels: dict[str, str] | None = None) -> ServiceConfig:
        """This cell's variant as a service: with the scenario's `serve:` settings and probation, on its target's
        node labels, its metrics labelled with the target's name."""
        variant = Variant(id=self.id, type=self.type, params=self.params, backend=self.backend, pruning=self.pruning)
        return ServiceConfig(variant=variant, serve=serve or ServeSpec(), probation_percent=probation_percent,
                             labels=labels or {}, target=self.target or "local")
    target: str | None = None  # the scenario target (node group) its tasks run on; None: wherever Ray puts them
    sla: Objectives | None = None  # what the scenario's `sla:` promises for it (harness.sla); not part of its id


def build_token(backend: Any, pruning: PruningSpec | None) -> str:
    """A backend entry's part of a cell id: the runtime's token, then the pruning's."""
    return ".".join([backend.token, *([pruning.token] if pruning else [])])


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
                field, msg = field_error(exc)
                where = "grid" if field.split(".")[0] in axes else "params"
                raise ScenarioFieldError(f"detectors[{i}].{where}" + (f".{field}" if field else ""), msg) from None
            base_id = ".".join([spec.name] + [f"{_cell_token(k)}-{_cell_token(v)}" for k, v in axes.items()])
            for build in (scenario.backends if cls.uses_backends and scenario.backends else [None]):
                backend = build.backend if build else None
                cells.append(
                    Cell(
                        id=f"{base_id}.{build.token}" if build else base_id,
                        detector=spec.name,
                        type=spec.type,
                        params=params,
                        axes={**axes, **({"backend": backend.backend, "precision": backend.precision} if backend else {})},
                        backend=backend,
                        pruning=build.pruning if build else None,
                    )
                )
    if scenario.targets:
        cells = [on_target(c, name, t) for c in cells for name, t in scenario.targets.items()]
    if scenario.sla is not None:
        cells = [c.model_copy(update={"sla": scenario.sla.for_target(c.target)}) for c in cells]
    if scenario.load is not None and scenario.load.cells:
        cells = _load_tested(cells, scenario.load)
    if scenario.backends and not any(c.backend for c in cells):
        raise ScenarioFieldError(
            "backends", "no detector here runs a model (lstm, autoencoder, or a LearnedDetector subclass); remove 'backends'"
        )
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"cells would share the id {dupes[0]!r}: give detectors distinct labels")
    return cells


def _load_tested(cells: list[Cell], load: LoadSpec) -> list[Cell]:
    """Check that each of `load.cells` names a cell; a cell left out is not held to the serving objectives (nothing
    measures them for it)."""
    from fnmatch import fnmatchcase

    for i, pattern in enumerate(load.cells):
        if not any(fnmatchcase(c.id, pattern) for c in cells):
            raise ScenarioFieldError(f"load.cells[{i}]", f"{pattern!r} names no cell (cells: {', '.join(c.id for c in cells)})")
    return [c if load.load_tests(c.id) or c.sla is None else c.model_copy(update={"sla": c.sla.without_serving()})
            for c in cells]


def on_target(cell: Cell, name: str, target: TargetSpec) -> Cell:
    """`cell` on target `name`: its id gains `@name`, and its backend the target's thread count."""
    backend = cell.backend
    if backend is not None and target.threads is not None:
        backend = backend.model_copy(update={"threads": target.threads})
    return cell.model_copy(update={"id": f"{cell.id}@{name}", "target": name, "backend": backend,
                                   "axes": {**cell.axes, "target": name}})


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
        field, msg = field_error(exc)
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
