"""Scenario files through the real CLI: good ones list their cells, bad ones fail with exit status 2 and one
line naming the file (and field), and `harness run` writes nothing before everything has been validated.

None of this starts Ray: every CLI subprocess runs with a stand-in `ray` package on PYTHONPATH that refuses
to import, and with HARNESS_CACHE in a temporary folder.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.timing import TimingSpec
from harness.scenario import Scenario, expand, load_scenario

from conftest import REPO, harness, one_error_line, snapshot, write_nab

BASELINES = REPO / "scenarios" / "baselines.yaml"
BASELINE_IDS = ["null", "random", "windowedGaussian.window-288", "windowedGaussian.window-2016"]
CELL_ID = re.compile(r"^[A-Za-z0-9.-]+$")


# --------------------------------------------------------------------------------------------- helpers


def in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, env: dict[str, str], *args: str | Path
) -> subprocess.CompletedProcess:
    """`harness ARGS` through harness.cli.main in this process, with `import ray` made to fail."""
    from harness.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setenv("HARNESS_CACHE", env["HARNESS_CACHE"])
    capsys.readouterr()
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    got = capsys.readouterr()
    return subprocess.CompletedProcess(["harness", *map(str, args)], rc, got.out, got.err)


GOOD_DETECTORS = "detectors:\n  - type: random\n"


# --------------------------------------------------------------------------------------------- good input


def test_quickstart_cells_are_what_readme_says(cli_env) -> None:
    """The README lists the quickstart's cells with their tasks; `harness validate` must list the same."""
    readme = (REPO / "README.md").read_text()
    listed = readme[readme.index("<!-- quickstart-cells"):].split("\n\n", 2)[1]
    said = re.findall(r"^- `([^`]+)` \(([a-z, ]+)\)", listed, re.M)
    proc = harness(cli_env, "validate", "scenarios/quickstart.yaml")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    shown = [tuple(re.fullmatch(r"  (\S+)  \(([a-z, ]+)\)", line).groups()) for line in proc.stdout.splitlines()[1:]]
    assert said and said == shown, (said, shown)
    assert f"{len(shown)} cells" in proc.stdout.splitlines()[0]


def test_baselines_expand_in_process() -> None:
    scenario, cells, text = load_scenario(BASELINES)
    assert [c.id for c in cells] == BASELINE_IDS
    assert text == BASELINES.read_text()
    assert scenario.name == "baselines"
    wg = [c for c in cells if c.type == "windowedGaussian"]
    assert [c.params for c in wg] == [{"min_samples": 10, "window": 288}, {"min_samples": 10, "window": 2016}]
    assert [c.axes for c in wg] == [{"window": 288}, {"window": 2016}]
    assert next(c for c in cells if c.type == "random").params == {"seed": 1}


def test_quantization_scenario_crosses_learned_detectors_with_backends() -> None:
    scenario, cells, _ = load_scenario(REPO / "scenarios" / "quantization.yaml")
    tokens = ["torch-fp32", "torch-bf16", "onnxruntime-fp32", "onnxruntime-fp16", "onnxruntime-int8-dynamic",
              "onnxruntime-int8-static", "openvino-fp32", "openvino-bf16", "openvino-fp16", "openvino-int8"]
    assert [c.id for c in cells] == [f"{d}.{t}" for d in ("lstm", "autoencoder", "autoencoder-wide") for t in tokens]
    assert all(CELL_ID.match(c.id) for c in cells)
    ort_static = cells[5]
    assert ort_static.backend.model_dump()["quantization"] == "static"
    assert ort_static.axes == {"backend": "onnxruntime", "precision": "int8"}
    assert scenario.timing.batch == 256 and scenario.timing.min_iterations == 100


def test_backends_skip_detectors_without_a_model_and_settings_name_the_cell(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "name: mixed\ndetectors:\n  - type: random\n  - type: autoencoder\n    grid: {window: [8, 16]}\n"
        "backends:\n  - {backend: onnxruntime}\n  - {backend: onnxruntime, graph_optimization: basic, threads: 2}\n"
    )
    _, cells, _ = load_scenario(path)
    assert [c.id for c in cells] == [
        "random",
        "autoencoder.window-8.onnxruntime-fp32",
        "autoencoder.window-8.onnxruntime-fp32.threads-2.graph-optimization-basic",
        "autoencoder.window-16.onnxruntime-fp32",
        "autoencoder.window-16.onnxruntime-fp32.threads-2.graph-optimization-basic",
    ]
    assert cells[0].backend is None
    assert cells[2].backend.threads == 2 and cells[2].backend.graph_optimization == "basic"


def test_expand_is_the_cartesian_product_of_a_grid(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(
        "name: grid\n"
        "detectors:\n"
        "  - type: windowedGaussian\n"
        "    params: {window: 50}\n"
        "    grid:\n"
        "      window: [10, 20, 300]\n"
        "      min_samples: [2, 5]\n"
        "  - type: random\n"
        "    label: coin\n"
        "    grid: {seed: [0, 1, 2, 3]}\n"
        "  - type: 'null'\n"
    )
    _, cells, _ = load_scenario(path)
    wg = [c for c in cells if c.type == "windowedGaussian"]
    assert [(c.params["window"], c.params["min_samples"]) for c in wg] == list(itertools.product([10, 20, 300], [2, 5]))
    assert all(c.axes == {"window": c.params["window"], "min_samples": c.params["min_samples"]} for c in wg)
    assert [c.params for c in cells if c.type == "random"] == [{"seed": s} for s in range(4)]
    assert {c.detector for c in cells if c.type == "random"} == {"coin"}
    assert len(cells) == 6 + 4 + 1
    ids = [c.id for c in cells]
    assert len(set(ids)) == len(ids)
    assert all(CELL_ID.match(i) for i in ids), ids
    assert "windowedGaussian.window-300.min_samples-5" not in ids  # '_' in a key becomes '-'
    assert "windowedGaussian.window-300.min-samples-5" in ids


@settings(max_examples=60, deadline=None)
@given(
    windows=st.lists(st.integers(1000, 10**6), min_size=1, max_size=4, unique=True),
    min_samples=st.lists(st.integers(2, 1000), min_size=1, max_size=3, unique=True),
    seeds=st.lists(st.integers(0, 2**63), min_size=1, max_size=4, unique=True),
)
def test_expand_property(windows: list[int], min_samples: list[int], seeds: list[int]) -> None:
    scenario = Scenario.model_validate(
        {
            "name": "prop",
            "detectors": [
                {"type": "windowedGaussian", "grid": {"window": windows, "min_samples": min_samples}},
                {"type": "random", "grid": {"seed": seeds}},
                {"type": "null"},
            ],
        }
    )
    cells = expand(scenario)
    assert len(cells) == len(windows) * len(min_samples) + len(seeds) + 1
    wg = [(c.params["window"], c.params["min_samples"]) for c in cells if c.type == "windowedGaussian"]
    assert wg == list(itertools.product(windows, min_samples))
    assert [c.params["seed"] for c in cells if c.type == "random"] == seeds
    ids = [c.id for c in cells]
    assert len(set(ids)) == len(ids)
    assert all(CELL_ID.match(i) for i in ids), ids


def test_targets_cross_every_cell_and_set_its_limits() -> None:
    from harness.tasks import plan_tasks

    scenario = Scenario.model_validate({
        "name": "t", "detectors": [{"type": "windowedGaussian"}, {"type": "autoencoder", "params": {"epochs": 1}}],
        "backends": [{"backend": "onnxruntime", "precision": "fp32", "threads": 2}],
        "targets": {"cloud": {"labels": {"tier": "cloud"}}, "edge": {"labels": {"tier": "edge"}, "threads": 1, "memory": "1.5GiB"}},
    })
    cells = {c.id: c for c in expand(scenario)}
    assert sorted(cells) == ["autoencoder.onnxruntime-fp32.threads-2@cloud", "autoencoder.onnxruntime-fp32.threads-2@edge",
                             "windowedGaussian@cloud", "windowedGaussian@edge"]
    edge_ae = cells["autoencoder.onnxruntime-fp32.threads-2@edge"]
    assert edge_ae.target == "edge" and edge_ae.axes["target"] == "edge" and edge_ae.backend.threads == 1
    assert cells["autoencoder.onnxruntime-fp32.threads-2@cloud"].backend.threads == 2
    assert scenario.target_labels(edge_ae) == {"tier": "edge"}
    needs = {(t.cell.id, t.kind): t.needs for t in plan_tasks(list(cells.values()), TimingSpec(exclusive=True), 3, True, scenario.targets)}
    score = needs[("autoencoder.onnxruntime-fp32.threads-2@edge", "score")]
    assert score.labels == {"tier": "edge"} and score.cpus == 1 and score.memory_bytes == int(1.5 * 2**30)
    timing = needs[("autoencoder.onnxruntime-fp32.threads-2@edge", "timing")]
    assert timing.exclusive and timing.labels == {"tier": "edge"}
    assert needs[("windowedGaussian@cloud", "load")].labels == {"tier": "cloud"}
    assert needs[("windowedGaussian@cloud", "score")].memory_bytes is None


def test_grid_values_that_differ_only_in_sign_give_distinct_cells() -> None:
    """Regression: `_cell_token` used to strip '-' from both ends, so -1 and 1 shared a token and the scenario
    was rejected with "cells would share the id 'random.seed-1'" although its cells differ."""
    scenario = Scenario.model_validate(
        {"name": "signs", "detectors": [{"type": "userdet:LastValueJump", "grid": {"gain": [1, -1]}}]}
    )
    cells = expand(scenario)
    assert len({c.id for c in cells}) == 2
    assert all(CELL_ID.match(c.id) for c in cells)


# --------------------------------------------------------------------------------------------- bad input


@dataclass
class Case:
    name: str
    make: Callable[[Path], Path]  # writes the input under a tmp folder; returns the scenario path to pass
    expect: tuple[str, ...] = ()  # substrings of the error line besides the file name
    names_file: bool = True  # the scenario path appears in the line
    extra: Callable[[Path], tuple[str, ...]] = lambda tmp: ()  # more expected substrings, known only at run time
    corpus: Callable[[Path], Path] | None = None  # a --corpus argument
    cli: bool = True  # through a real `python -m harness` process; False: harness.cli.main in this process


def _text(text: str, name: str = "s.yaml") -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_text(text)
        return tmp / name

    return make


def _bytes(data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "s.yaml").write_bytes(data)
        return tmp / "s.yaml"

    return make


def _missing(tmp: Path) -> Path:
    return tmp / "no-such.yaml"


def _folder(tmp: Path) -> Path:
    (tmp / "folder.yaml").mkdir()
    return tmp / "folder.yaml"


def _corpus_path(kind: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        if kind == "empty folder":
            (tmp / "corpus").mkdir()
        elif kind == "file":
            (tmp / "corpus").write_text("timestamp,value\n")
        (tmp / "s.yaml").write_text(f"name: x\ncorpus:\n  path: corpus\n{GOOD_DETECTORS}")
        return tmp / "s.yaml"

    return make


def _non_nab_corpus(tmp: Path) -> Path:
    (tmp / "notnab").mkdir()
    (tmp / "notnab" / "readme.txt").write_text("not a corpus\n")
    return tmp / "notnab"


def _short_token(tmp: Path) -> Path:
    (tmp / "token").write_text("short\n")
    path = tmp / "s.yaml"
    path.write_text(f"name: x\n{GOOD_DETECTORS}serve: {{token_file: token}}\n")  # relative to the scenario
    return path


def _missing_thresholds(tmp: Path) -> Path:
    write_nab(tmp / "nab")  # a real (tiny) corpus, so `run` gets as far as the thresholds
    return _text(f"name: x\ncorpus: {{path: nab}}\n{GOOD_DETECTORS}scoring:\n  thresholds: nothr.json\n")(tmp)


CASES = [
    Case("missing file", _missing, ("does not exist",)),
    Case("a directory", _folder, ("folder",)),
    Case("empty file", _text(""), ("empty",)),
    Case("whitespace-only file", _text("  \n\n# just a comment\n"), ("mapping",), cli=False),
    Case("binary file", _bytes(b"name: x\n\x00\x01\x02\xff\xfe binary"), ("binary",)),
    Case("non-UTF-8 file", _bytes(b"name: caf\xe9\ndetectors: []\n"), ("UTF-8",), cli=False),
    Case("invalid YAML", _text("name: x\n  description: indented wrongly\ndetectors: []\n"), ("invalid YAML", "line 2")),
    Case("invalid YAML, unclosed flow", _text("name: x\ndetectors:\n  - type: random\n    params: {seed: 1\n"), ("invalid YAML", "line "), cli=False),
    Case("list at top level", _text("- type: random\n- type: 'null'\n"), ("mapping", "list")),
    Case("scalar at top level", _text("42\n"), ("mapping",)),
    Case("string at top level", _text("just some words\n"), ("mapping", "string"), cli=False),
    Case("unknown top-level key", _text(f"name: x\nfoo: 1\n{GOOD_DETECTORS}"), ("foo", "unknown key")),
    Case("missing name", _text(GOOD_DETECTORS), ("name", "missing"), cli=False),
    Case("bad scenario name", _text(f"name: 'has space'\n{GOOD_DETECTORS}"), ("name",), cli=False),
    Case(
        "unknown key in a detector",
        _text("name: x\ndetectors:\n  - type: random\n    colour: red\n"),
        ("detectors[0].colour", "unknown key"),
    ),
    Case("detectors is a string", _text('name: x\ndetectors: "x"\n'), ("detectors", "list")),
    Case("detectors is empty", _text("name: x\ndetectors: []\n"), ("detectors",), cli=False),
    Case(
        "params.window is a word",
        _text("name: x\ndetectors:\n  - type: windowedGaussian\n    params: {window: big}\n"),
        ("params.window", "integer"),
    ),
    Case(
        "params.window below 2",
        _text("name: x\ndetectors:\n  - type: windowedGaussian\n    params: {window: 1}\n"),
        ("params.window", "2"),
        cli=False,
    ),
    Case(
        "unknown detector param",
        _text("name: x\ndetectors:\n  - type: windowedGaussian\n    params: {windw: 5}\n"),
        ("windw", "unknown key"),
        cli=False,
    ),
    Case(
        "grid value of the wrong type",
        _text("name: x\ndetectors:\n  - type: windowedGaussian\n    grid: {window: [10, big]}\n"),
        ("window", "integer"),
        cli=False,
    ),
    Case(
        "empty grid",
        _text("name: x\ndetectors:\n  - type: windowedGaussian\n    grid: {window: []}\n"),
        ("grid", "window"),
        cli=False,
    ),
    Case(
        "corpus.synthetic.rows negative",
        _text(f"name: x\ncorpus:\n  synthetic: {{rows: -5}}\n{GOOD_DETECTORS}"),
        ("corpus.synthetic.rows",),
    ),
    Case("unknown threshold policy", _text(f"name: x\nscoring:\n  policies: [{{type: magic}}]\n{GOOD_DETECTORS}"),
         ("scoring.policies[0].type",), cli=False),
    Case("bad policy parameter", _text(f"name: x\nscoring:\n  policies: [{{type: spot, grid: {{risk: [0.001, 5]}}}}]\n{GOOD_DETECTORS}"),
         ("scoring.policies[0]", "risk"), cli=False),
    Case("target without labels", _text(f"name: x\ntargets:\n  edge: {{cpus: 1}}\n{GOOD_DETECTORS}"), ("targets.edge.labels", "missing")),
    Case("target memory not a size", _text(f"name: x\ntargets:\n  edge: {{labels: {{tier: edge}}, memory: lots}}\n{GOOD_DETECTORS}"),
         ("targets.edge.memory", "512MiB"), cli=False),
    Case("target label with a space", _text(f"name: x\ntargets:\n  edge: {{labels: {{tier: 'far away'}}}}\n{GOOD_DETECTORS}"),
         ("targets.edge.labels", "far away"), cli=False),
    Case("target name with a space", _text(f"name: x\ntargets:\n  'far edge': {{labels: {{tier: edge}}}}\n{GOOD_DETECTORS}"),
         ("targets", "far edge"), cli=False),
    Case(
        "corpus with both sources",
        _text(f"name: x\ncorpus:\n  synthetic: {{rows: 600}}\n  path: somewhere\n{GOOD_DETECTORS}"),
        ("corpus", "exactly one"),
        cli=False,
    ),
    Case(
        "unknown detector type",
        _text("name: x\ndetectors:\n  - type: isolationForest\n"),
        ("detectors[0].type", "isolationForest", "null", "random", "windowedGaussian"),
    ),
    Case(
        "unimportable detector path",
        _text("name: x\ndetectors:\n  - type: no_such_pkg.mod:Detector\n"),
        ("detectors[0].type", "no_such_pkg"),
        cli=False,
    ),
    Case(
        "relative-import detector path",  # importlib raises TypeError here, not ImportError
        _text("name: x\ndetectors:\n  - type: .relative:Detector\n"),
        ("detectors[0].type",),
        cli=False,
    ),
    Case("type: null unquoted", _text("name: x\ndetectors:\n  - type: null\n"), ("detectors[0].type", "quot")),
    Case(
        "corpus.path does not exist",
        _text(f"name: x\ncorpus:\n  path: nowhere\n{GOOD_DETECTORS}"),
        ("corpus.path", "does not exist"),
    ),
    Case("corpus.path is an empty folder", _corpus_path("empty folder"), ("corpus.path", "NAB")),
    Case("corpus.path is a file", _corpus_path("file"), ("corpus.path", "NAB")),
    Case(
        "--corpus is not in NAB's layout",
        _text(f"name: x\n{GOOD_DETECTORS}"),
        ("NAB",),
        names_file=False,
        extra=lambda tmp: (str(tmp / "notnab"),),
        corpus=_non_nab_corpus,
    ),
    Case(
        "duplicate cell ids",
        _text("name: x\ndetectors:\n  - type: random\n  - type: random\n    params: {seed: 3}\n"),
        ("detectors", "'random'", "label"),
    ),
    Case(
        "duplicate labels",
        _text("name: x\ndetectors:\n  - type: random\n    label: a\n  - type: 'null'\n    label: a\n"),
        ("detectors", "'a'"),
        cli=False,
    ),
    Case(
        "unknown backend",
        _text(f"name: x\n{GOOD_DETECTORS}backends:\n  - {{backend: tensorrt}}\n"),
        ("backends[0].backend", "torch", "onnxruntime", "openvino"),
    ),
    Case(
        "torch int8",
        _text(f"name: x\n{GOOD_DETECTORS}backends:\n  - {{backend: torch}}\n  - {{backend: torch, precision: int8}}\n"),
        ("backends[1]", "torch int8"),
    ),
    Case(
        "quantization on openvino",
        _text(f"name: x\n{GOOD_DETECTORS}backends:\n  - {{backend: openvino, precision: int8, quantization: static}}\n"),
        ("backends[0]", "onnxruntime int8 only"),
        cli=False,
    ),
    Case(
        "graph_optimization on openvino",
        _text(f"name: x\n{GOOD_DETECTORS}backends:\n  - {{backend: openvino, graph_optimization: basic}}\n"),
        ("backends[0]", "graph_optimization", "onnxruntime only"),
        cli=False,
    ),
    Case(
        "calibration_headroom on dynamic int8",
        _text(f"name: x\n{GOOD_DETECTORS}backends:\n  - {{backend: onnxruntime, precision: int8, calibration_headroom: 3}}\n"),
        ("backends[0]", "static int8 only"),
        cli=False,
    ),
    Case(
        "backend threads 0",
        _text(f"name: x\n{GOOD_DETECTORS}backends:\n  - {{backend: onnxruntime, threads: 0}}\n"),
        ("backends[0].threads", "1"),
        cli=False,
    ),
    Case(
        "the same backend twice",
        _text(f"name: x\n{GOOD_DETECTORS}backends:\n  - {{backend: onnxruntime, precision: int8}}\n"
              "  - {backend: onnxruntime, precision: int8, quantization: dynamic}\n"),
        ("backends", "onnxruntime-int8-dynamic", "same"),
    ),
    Case(
        "backends but no model",
        _text(f"name: x\n{GOOD_DETECTORS}backends:\n  - {{backend: onnxruntime}}\n"),
        ("backends", "no detector", "model"),
        cli=False,
    ),
    Case(
        "timing.batch 1",
        _text(f"name: x\n{GOOD_DETECTORS}timing: {{batch: 1}}\n"),
        ("timing.batch", "2"),
        cli=False,
    ),
    Case("load without rates", _text(f"name: x\n{GOOD_DETECTORS}load: {{mode: open}}\n"), ("load", "rates")),
    Case("peak probes shorter than the validity rule",
         _text(f"name: x\n{GOOD_DETECTORS}load: {{find_peak: true, peak_duration_s: 5}}\n"),
         ("load", "every peak probe would be INVALID", "5 s", "rules.min_duration_s (10 s)"), cli=False),
    Case("an sla objective misspelt", _text(f"name: x\n{GOOD_DETECTORS}sla: {{p95ms: 100}}\n"),
         ("sla", "p95ms: unknown objective"), cli=False),
    Case("load with an unknown path", _text(f"name: x\n{GOOD_DETECTORS}load: {{rates: [10], paths: [ftp]}}\n"),
         ("load.paths[0]", "http"), cli=False),
    Case("closed loop without clients", _text(f"name: x\n{GOOD_DETECTORS}load: {{mode: closed}}\n"),
         ("load", "concurrency"), cli=False),
    Case("serve with no shard", _text(f"name: x\n{GOOD_DETECTORS}serve: {{shards: 0}}\n"), ("serve.shards", "1"), cli=False),
    Case("serve with an unknown key", _text(f"name: x\n{GOOD_DETECTORS}serve: {{replicas: 2}}\n"),
         ("serve.replicas", "unknown key"), cli=False),
    Case("serve exposed without a token", _text(f"name: x\n{GOOD_DETECTORS}serve: {{host: 0.0.0.0}}\n"),
         ("serve", "0.0.0.0", "token_file", "no_auth")),
    Case("serve with a token file that does not exist", _text(f"name: x\n{GOOD_DETECTORS}serve: {{token_file: nope.txt}}\n"),
         ("serve.token_file", "nope.txt"), cli=False),
    Case("serve with a short token", _short_token, ("serve.token_file", "at least 16"), cli=False),
    Case(
        "thresholds file does not exist",
        _missing_thresholds,
        ("scoring.thresholds",),
        extra=lambda tmp: (str(tmp / "nothr.json"),),
    ),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2(case: Case, command: str, tmp_path: Path, cli_env, monkeypatch, capsys) -> None:
    """The cases the brief names run through a real process; the extra ones through `main()` in this process
    (same code path, a tenth of the time)."""
    scenario = case.make(tmp_path)
    out = tmp_path / "out"
    args: list[str | Path] = [command, scenario]
    if case.corpus is not None:
        args += ["--corpus", case.corpus(tmp_path)]
    if command == "run":
        args += ["--out", out]
    if case.cli:
        line = one_error_line(harness(cli_env, *args))
    else:
        line = one_error_line(in_process(monkeypatch, capsys, cli_env, *args))
    assert line.startswith("harness: error: "), line
    if case.names_file:
        assert str(scenario) in line, f"the line does not name {scenario}: {line}"
    for part in (*case.expect, *case.extra(tmp_path)):
        assert part in line, f"{part!r} not in: {line}"
    if command == "run":
        assert not out.exists(), f"--out was created although the input is bad: {sorted(out.rglob('*'))}"


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    """A valid scenario on a tiny NAB-layout corpus (so nothing needs generating)."""
    write_nab(tmp_path / "nab")
    path = tmp_path / "good.yaml"
    path.write_text(f"name: good\ncorpus: {{path: nab}}\n{GOOD_DETECTORS}")
    return path


def test_good_tiny_scenario_validates(good: Path, cli_env) -> None:
    proc = harness(cli_env, "validate", good)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1:] == ["  random  (score)"]


def test_run_refuses_a_non_empty_out_and_leaves_it_alone(good: Path, tmp_path: Path, cli_env) -> None:
    out = tmp_path / "previous"
    (out / "cells").mkdir(parents=True)
    (out / "table.md").write_text("an earlier run\n")
    (out / "cells" / "result.json").write_text("{}")
    before = snapshot(out)
    line = one_error_line(harness(cli_env, "run", good, "--out", out))
    assert str(out) in line and "not empty" in line, line
    assert snapshot(out) == before


def test_run_refuses_an_out_that_is_a_file(good: Path, tmp_path: Path, cli_env) -> None:
    out = tmp_path / "a-file"
    out.write_text("keep me\n")
    line = one_error_line(harness(cli_env, "run", good, "--out", out))
    assert str(out) in line, line
    assert out.read_text() == "keep me\n"


def test_resume_needs_a_run_folder(good: Path, tmp_path: Path, cli_env) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    line = one_error_line(harness(cli_env, "run", good, "--resume", "--out", out))
    assert str(out) in line and "manifest" in line, line
    assert list(out.iterdir()) == []


def test_resume_of_a_missing_folder_creates_nothing(good: Path, tmp_path: Path, cli_env) -> None:
    out = tmp_path / "never-ran"
    one_error_line(harness(cli_env, "run", good, "--resume", "--out", out))
    assert not out.exists()


# --------------------------------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    "args",
    [("run",), ("bogus",), (), ("validate",), ("run", "scenarios/quickstart.yaml", "--no-such-flag"), ("corpus",),
     ("serve", "scenarios/baselines.yaml", "--cell", "nope"), ("serve", "scenarios/baselines.yaml"),
     ("load", "ftp://x", "--events-per-request", "1", "--rate", "1", "--duration", "1"),
     ("load", "http://127.0.0.1:9", "--events-per-request", "1", "--rate", "1", "--duration", "1"),
     ("load", "http://127.0.0.1:9", "--events-per-request", "1", "--duration", "1"),
     ("load", "http://127.0.0.1:9", "--events-per-request", "1", "--rate", "-5", "--duration", "1"),
     ("serve", "scenarios/baselines.yaml", "--cell", "null", "--host", "0.0.0.0"),
     ("serve", "scenarios/baselines.yaml", "--cell", "null", "--token-file", "/nonexistent/token"),
     ("serve", "scenarios/baselines.yaml", "--cell", "null", "--port", "70000")],
    ids=["run without file", "unknown command", "no command", "validate without file", "unknown flag", "corpus without subcommand",
         "serve an unknown cell", "serve without --cell", "load a non-http URL", "load a port nothing answers on",
         "load without rate or concurrency", "load at a negative rate", "serve beyond loopback without a token",
         "serve with a missing token file", "serve on port 70000"],
)
def test_usage_error_is_one_line_exit_2(args: tuple[str, ...], cli_env) -> None:
    line = one_error_line(harness(cli_env, *args))
    assert "error" in line, line


def test_help_exits_0(cli_env) -> None:
    proc = harness(cli_env, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "validate" in proc.stdout and "run" in proc.stdout


# --------------------------------------------------------------------------------------------- import weight

HEAVY = ("ray", "torch", "pandas")
_CHECK = """
import sys
from harness.cli import main
try:
    rc = main({argv!r})
except SystemExit as exc:
    rc = exc.code
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("RC", rc, "HEAVY", ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["validate", "scenarios/quickstart.yaml"], ["validate", "scenarios/quantization.yaml"]],
    ids=["help", "validate", "validate-learned"],
)
def test_light_commands_do_not_import_heavy_modules(argv: list[str]) -> None:
    # The real environment (no stand-in ray), so a stray `import ray` would succeed and be seen.
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK.format(argv=argv, heavy=HEAVY)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "RC 0 HEAVY", f"{proc.stderr}"


def test_validate_importtime_has_no_heavy_modules() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "harness", "validate", "scenarios/quickstart.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    for name in HEAVY:
        assert not any(m == name or m.startswith(name + ".") for m in imported), name


# --------------------------------------------------------------------------------------------- load.cells

def test_load_cells_picks_the_variants_load_tested(tmp_path: Path, cli_env) -> None:
    """Only the cells `load.cells` names get a load task; the others are not held to the serving objectives
    (nothing measures them); a pattern naming no cell is one line naming the entry."""
    from harness.tasks import plan_tasks

    base = {"name": "sel", "corpus": {"synthetic": {"seed": 1, "rows": 600}}, "detectors": [{"type": "autoencoder"}],
            "backends": [{"backend": "torch", "precision": "fp32"}, {"backend": "onnxruntime", "precision": "int8"}],
            "load": {"cells": ["*int8*"], "rates": [5]}, "sla": {"p95_ms": 100, "max_quantized_loss_pct": 5}}
    path = tmp_path / "sel.yaml"
    path.write_text(json.dumps(base))
    scenario, cells, _ = load_scenario(path)
    loaded = {c.id for c in cells if scenario.load.load_tests(c.id)}
    kinds = {(t.cell.id, t.kind) for t in plan_tasks(cells, scenario.timing, 1, loaded)}
    assert loaded == {"autoencoder.onnxruntime-int8-dynamic"}
    assert {k for c, k in kinds if c == "autoencoder.torch-fp32"} == {"score", "timing"}
    assert ("autoencoder.onnxruntime-int8-dynamic", "load") in kinds
    objectives = {c.id: c.sla.given() for c in cells}
    assert objectives == {"autoencoder.torch-fp32": {"max_quantized_loss_pct": 5},
                          "autoencoder.onnxruntime-int8-dynamic": {"p95_ms": 100, "max_quantized_loss_pct": 5}}
    path.write_text(json.dumps({**base, "load": {"cells": ["*int8*", "*int4*"], "rates": [5]}}))
    line = one_error_line(harness(cli_env, "validate", path))
    assert str(path) in line and "load.cells[1]" in line and "'*int4*' names no cell" in line, line
