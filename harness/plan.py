"""A run's plan: the scenario, its cells, the corpus (loaded and checked), the scoring profiles and thresholds.

Everything the user gave is validated here, once, before anything is written: `harness validate` and
`harness run` accept and refuse exactly the same input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from harness.corpus.layout import Corpus, check_layout, load_corpus, read_labels, select
from harness.errors import InputError
from harness.scenario import Cell, Scenario, load_scenario
from harness.serving.config import ServeSpec
from harness.scoring.profiles import REFERENCE_PROFILE, Profile, load_profiles, load_thresholds
from harness.shipped import resolve


@dataclass
class Plan:
    scenario_path: Path
    scenario: Scenario
    scenario_text: str
    cells: list[Cell]
    corpus: Corpus
    profiles: tuple[Profile, ...]
    thresholds: dict[str, dict[str, float]] | None  # per detector label; None: optimised

    @property
    def corpus_root(self) -> Path:
        assert self.corpus.root is not None
        return self.corpus.root

    def describe_corpus(self) -> str:
        c = self.scenario.corpus
        where = c.path if c.path else f"synthetic (seed {c.synthetic.seed}, {c.synthetic.rows} rows/file)"
        subset = f", only {', '.join(c.only)}" if c.only else ""
        return f"{where}{subset}: {len(self.corpus.files)} files, {self.corpus.n_rows} rows"


def corpus_root(scenario: Scenario) -> Path:
    if scenario.corpus.path is not None:
        return check_layout(scenario.corpus.path)
    from harness.corpus.synthetic import cached_corpus_root

    return cached_corpus_root(scenario.corpus.synthetic.seed, scenario.corpus.synthetic.rows)


def plan(scenario_path: str | Path, corpus_override: str | None = None, only: list[str] | None = None,
         serve_host: str | None = None, serve_token_file: str | None = None) -> Plan:
    """Everything a run needs, validated; raises InputError before anything is written. `scenario_path` may name a
    shipped scenario (harness.shipped); `serve_host` and `serve_token_file` (--serve-host, --serve-token-file)
    replace the scenario's serve.host and serve.token_file, so one scenario serves on loopback here and on a
    cluster's private network there without a copy of it."""
    scenario_path = resolve(scenario_path)
    scenario, cells, text = load_scenario(scenario_path, corpus_override, only)
    if serve_host is not None or serve_token_file is not None:
        scenario.serve = serve_with(scenario, scenario_path, "--serve-", host=serve_host, token_file=serve_token_file)
    field = "--only" if only is not None else "corpus.only"
    if corpus_override is not None:
        check_layout(corpus_override)
    elif scenario.corpus.path is not None:
        try:
            check_layout(scenario.corpus.path)
        except InputError as exc:
            raise InputError(exc.detail, scenario_path, f"corpus.path ({scenario.corpus.path})") from None
    root = corpus_root(scenario)
    try:
        select(list(read_labels(root)), scenario.corpus.only)
    except ValueError as exc:
        raise InputError(str(exc), scenario_path, field) from None
    profiles = load_profiles(root / "config" / "profiles.json" if scenario.corpus.path else None)
    if REFERENCE_PROFILE not in {p.name for p in profiles}:
        raise InputError(f"no {REFERENCE_PROFILE!r} profile: the table reads its metrics at that profile's threshold", root / "config" / "profiles.json")
    thresholds = None
    if scenario.scoring.thresholds != "optimize":
        try:
            thresholds = {c.detector: load_thresholds(scenario.scoring.thresholds, c.detector, profiles) for c in cells}
        except InputError as exc:
            raise InputError(f"{exc.path}: {exc.detail}", scenario_path, "scoring.thresholds") from None
    corpus = load_corpus(root, only=scenario.corpus.only)
    return Plan(scenario_path, scenario, text, cells, corpus, profiles, thresholds)


def service_config(scenario_path: str | Path, cell_id: str, port: int | None = None, host: str | None = None,
                   token_file: str | None = None, no_auth: bool = False):
    """The ServiceConfig that deploys one cell's variant with the scenario's `serve:` settings and the command
    line's port, host and token file (read here, in the driver: the replicas get the token, not the file)."""
    from harness.tokens import read_token

    scenario_path = resolve(scenario_path)
    scenario, cells, _ = load_scenario(scenario_path)
    cell = next((c for c in cells if c.id == cell_id), None)
    if cell is None:
        raise InputError(f"no cell {cell_id!r} in this scenario (its cells: {', '.join(c.id for c in cells)})", scenario_path, "--cell")
    serve = serve_with(scenario, scenario_path, "--", port=port, host=host, token_file=token_file, no_auth=no_auth)
    token = read_token(serve.token_file, "--token-file") if serve.token_file else None
    config = cell.service(serve, scenario.scoring.probation_percent, scenario.target_labels(cell))
    return config.model_copy(update={"api_token": token})


def serve_with(scenario: Scenario, scenario_path: Path, flag: str, port: int | None = None, host: str | None = None,
               token_file: str | None = None, no_auth: bool = False) -> ServeSpec:
    """The scenario's `serve:` with the command line's settings in place of its own, validated again (a host beyond
    loopback still needs a token) and the token file checked readable here, so that its error names the flag
    (`flag` + the field, e.g. --serve-token-file). A token file path may start with ~ (a `ray job submit` entrypoint carries it unexpanded)."""
    from harness.tokens import read_token

    if token_file is not None:
        token_file = str(Path(token_file).expanduser().resolve())
        read_token(token_file, f"{flag}token-file")
    updates = {k: v for k, v in (("port", port), ("host", host), ("token_file", token_file)) if v is not None}
    if no_auth:
        updates["no_auth"] = True
    try:
        return ServeSpec.model_validate({**(scenario.serve or ServeSpec()).model_dump(), **updates})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = first["loc"][0] if first["loc"] else "host"  # the model's own check: an exposed host, no token
        msg = first["msg"].removeprefix("Value error, ")
        if flag != "--":  # `harness run` has --serve-token-file, and no --no-auth of its own
            msg = msg.replace("--token-file", f"{flag}token-file").replace(" (--no-auth)", "")
        raise InputError(msg, scenario_path, f"{flag}{where}".replace("_", "-")) from None
