"""The documentation cannot go stale quietly: the site builds with no warning (a broken link or anchor fails), every
quoted figure is its snapshot's (docs/figures/, rendered by docs/tools/figures.py), and every `harness ...` command
the docs quote parses with the real argument parser. Cost: ~3 s for the site build, well under 1 s for the rest."""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO, require
from harness.cli import _parser as new_parser

spec = importlib.util.spec_from_file_location("doc_figures", REPO / "docs" / "tools" / "figures.py")
figures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figures)


def test_site_builds_strict_with_no_warning(tmp_path) -> None:
    """`mkdocs build --strict` with anchors validated (mkdocs.yml): a link to a missing page or heading fails."""
    mkdocs = shutil.which("mkdocs")
    require(mkdocs is not None, "mkdocs not installed (the test extra has mkdocs-material)")
    proc = subprocess.run([mkdocs, "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr[-3000:]
    home = (tmp_path / "site" / "index.html").read_text()
    assert "benchmark streaming anomaly detectors on NAB" in home  # README.md is the home page
    assert 'href="quantization/' in home  # its docs/quantization.md links mapped to the site's page
    assert (tmp_path / "site" / "example" / "report.html").is_file()


def test_docs_quote_their_snapshots() -> None:
    """Re-rendering every marked table and figure changes nothing."""
    stale = []
    for path in figures.documents():
        text = path.read_text()
        stale += figures.stale(text, figures.render(text, path.name), path)
    assert not stale, "run `python docs/tools/figures.py`, or fix the snapshot:\n" + "\n".join(stale)


def test_a_figure_changed_by_hand_is_caught() -> None:
    """The check above can fail: a table cell and a prose figure edited by hand both differ from their rendering."""
    path = REPO / "docs" / "quantization.md"
    text = path.read_text()
    for old, new in (("| lstm.torch-fp32 | 56.78 |", "| lstm.torch-fp32 | 56.79 |"), ('"NAB standard"-->56.78<', '"NAB standard"-->56.79<')):
        assert old in text
        edited = text.replace(old, new, 1)
        assert len(figures.stale(edited, figures.render(edited, path.name), path)) == 1


def test_every_snapshot_is_described_and_quoted() -> None:
    sources = yaml.safe_load((figures.FIGURES / "sources.yaml").read_text())
    snapshots = {p.stem for p in figures.FIGURES.glob("*.csv")}
    assert set(sources) == snapshots
    assert all({"command", "machine", "quoted_in"} <= set(s) for s in sources.values())
    used = set()
    for path in figures.documents():
        text = path.read_text()
        used |= {m.group(3) for m in figures.BLOCK.finditer(text)} | {shlex.split(m.group(2))[0] for m in figures.INLINE.finditer(text)}
    used |= {"quantization", "pruning"} if {"quantization-pass", "pruning-structured"} & used else set()
    assert snapshots <= used, f"snapshots quoted nowhere: {sorted(snapshots - used)}"
    for name in snapshots:
        with (figures.FIGURES / f"{name}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        keys = [r.get("key", r.get("cell")) for r in rows]
        assert rows and len(set(keys)) == len(keys), f"{name}.csv: rows need unique keys"


# --- the `harness` command lines the docs quote ----------------------------------------------------------------------
FENCE = re.compile(r"^\s*```[^\n]*\n(.*?)^\s*```", re.S | re.M)
SPAN = re.compile(r"`(harness [^`]+)`")


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return new_parser()  # one parser for every line: building it is most of this test's time


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), {})


def _flags(p: argparse.ArgumentParser) -> set[str]:
    """The options of `p` and of every subcommand below it (a usage line may name several: `list|show`)."""
    out = {o for a in p._actions for o in a.option_strings}
    for child in _subparsers(p).values():
        out |= _flags(child)
    return out


def _resolve(words: list[str]) -> argparse.ArgumentParser:
    p = _parser()
    for w in words:
        if w not in _subparsers(p):
            break
        p = _subparsers(p)[w]
    return p


def quoted_commands() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(where, command) for each `harness` line in a code block (a whole command line), and for each code span
    in prose (usage notation: only its options are checked)."""
    lines, spans = [], []
    for path in figures.documents():
        text, where = path.read_text(), str(path.relative_to(REPO))
        for block in FENCE.findall(text):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = re.sub(r"\$\([^)]*\)", "X", line.split(" #")[0])
                for part in re.split(r"&&|\|\||;|\|", line):
                    if part.strip().startswith("harness "):  # usage notation ([--flag], ...) is checked as a span
                        (spans if re.search(r"\[|\.\.\.", part) else lines).append((where, part.strip()))
        spans += [(where, s) for s in SPAN.findall(text)]
    return lines, spans


def test_quoted_command_lines_parse() -> None:
    lines, spans = quoted_commands()
    assert len(lines) > 20 and len(spans) > 50  # the extraction found the docs' commands
    bad = []
    for where, line in lines:
        words = shlex.split(line)[1:]
        try:
            _parser().parse_args(words[:words.index("--") + 2] if "--" in words else words)
        except SystemExit:
            bad.append(f"{where}: {line}")
    for where, span in spans:
        words = span.replace("\\|", "|").split()[1:]
        words = words[:words.index("--")] if "--" in words else words  # after `--`: the command it runs
        p = _resolve(words)
        unknown = {w.strip("[]()").split("=")[0] for w in words if w.strip("[(").startswith("--")} - _flags(p) - {"--help"}
        bad += [f"{where}: `{span}`: no option {u}" for u in sorted(unknown)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("line", ["harness run scenarios/quickstart.yaml --history h.sqlite", "harness nab fetch"])
def test_the_command_check_can_fail(line: str, capsys) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(shlex.split(line)[1:])
    assert "--history" in _flags(_resolve(["history", "show"])) and "--history" not in _flags(_resolve(["run"]))

