"""Render the figures that README.md and docs/*.md quote from the committed snapshots in docs/figures/.

    python docs/tools/figures.py           # rewrite every marked table and figure from its snapshot
    python docs/tools/figures.py --check   # change nothing; exit 1 naming each place that disagrees
    python docs/tools/figures.py --example # rerun the site's example (scenarios/quickstart.yaml): its snapshot
                                           # docs/figures/example.csv and report docs/example/report.html

Why: figures typed by hand drift from the runs they came from and from each other. Each snapshot is a small CSV
(docs/figures/NAME.csv) that docs/figures/sources.yaml describes: the command that measured it, the machine, where
it is quoted. Markers in the Markdown say what is generated:

    <!-- figures: NAME -->  ...a table, rewritten...  <!-- /figures -->
    <!--fig NAME KEY COLUMN-->56.78<!--/fig-->       (one figure in prose: the row whose `key` is KEY)

NAME is a snapshot (every column but `key` shown as it is written) or one of VIEWS below, which format typed
snapshots of a run's table.csv columns; their `gate` columns are computed by harness.report.tables.gate, so the
docs word a verdict exactly as a run does.
"""

from __future__ import annotations

import csv
import re
import shlex
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "docs" / "figures"
BLOCK = re.compile(r"^([ \t]*)(<!-- figures: (\S+) -->\n)(.*?)^([ \t]*<!-- /figures -->)", re.S | re.M)
INLINE = re.compile(r"(<!--fig (.+?)-->)(.*?)(<!--/fig-->)")
Row = dict[str, str]


def documents() -> list[Path]:
    """The Markdown that may quote figures: the README, docs/ and the READMEs the site shows."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "docs" / "example" / "index.md", *sorted(REPO.glob("*/README.md")),
            *sorted(REPO.glob("clusters/*/README.md"))]


def snapshot(name: str) -> list[Row]:
    path = FIGURES / f"{name}.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no such snapshot (docs/figures/sources.yaml lists them)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


# --- typed snapshots: a run's table.csv columns, formatted as the docs show them -------------------------------------
def _num(fmt: str, scale: float = 1.0, suffix: str = "") -> Callable[[str], str]:
    return lambda v: "" if v == "" else format(float(v) / scale, fmt) + suffix


FORMATS: dict[str, Callable[[str], str]] = {
    "nab_standard": _num(".2f"), "nab_standard_delta_pct": _num("+.2f", suffix="%"),
    "latency_b1_p50_ms": _num(".3f"), "latency_bN_p50_ms": _num(".3f"),
    "throughput_eps": _num(".2f", 1e6, " M"),
    "speedup_vs_fp32": _num(".2f", suffix="x"), "speedup_vs_backend_fp32": _num(".2f", suffix="x"),
    "throughput_spread_pct": _num(".0f", suffix="%"), "model_bytes": lambda v: f"{int(v):,}" if v else "",
    "weights_nonzero": lambda v: f"{int(v):,}" if v else "",
}


def fmt(column: str, value: str) -> str:
    return FORMATS.get(column, str)(value)


def with_gates(rows: list[Row]) -> list[Row]:
    """Each row with `gate` and `gate_vs_backend` as harness.report.tables.gate words them, from the snapshot's
    NAB scores and speedups (each speedup is the throughput over a reference of 1)."""
    sys.path.insert(0, str(REPO))
    from harness.report.tables import gate

    torch_nab = {r["model"]: r["nab_standard"] for r in rows if r["backend"] == "torch" and r["precision"] == "fp32"
                 and not r["pruning"]}
    out = []
    for r in rows:
        reduced = r["precision"] != "fp32" or bool(r["pruning"])
        verdicts = {}
        for column, speedup in (("gate", "speedup_vs_fp32"), ("gate_vs_backend", "speedup_vs_backend_fp32")):
            row = {"backend": r["backend"], "nab_standard": float(r["nab_standard"]), "throughput_eps": float(r[speedup])}
            ref = {"status": "ok", "backend": "torch" if column == "gate" else r["backend"],
                   "nab_standard": float(torch_nab[r["model"]]), "throughput_eps": 1.0}
            verdicts[column] = gate(row, ref, ref) if reduced else ""
        out.append({**r, **verdicts})
    return out


QUANTIZATION = [("cell", "cell"), ("NAB std", "nab_standard"), ("Δ vs torch", "nab_standard_delta_pct"),
                ("b1 p50 ms", "latency_b1_p50_ms"), ("b256 p50 ms", "latency_bN_p50_ms"), ("events/s", "throughput_eps"),
                ("vs torch fp32", "speedup_vs_fp32"), ("vs same runtime fp32", "speedup_vs_backend_fp32"),
                ("spread", "throughput_spread_pct"), ("bytes", "model_bytes"), ("gate", "gate"),
                ("gate_vs_backend", "gate_vs_backend")]
PRUNING = [("cell", "cell"), ("NAB std", "nab_standard"), ("Δ vs torch", "nab_standard_delta_pct"),
           ("events/s", "throughput_eps", _num(".0f", 1e3, " k")), ("vs torch fp32", "speedup_vs_fp32"),
           ("vs same runtime unpruned fp32", "speedup_vs_backend_fp32"), ("spread", "throughput_spread_pct"),
           ("bytes", "model_bytes"), ("weights ≠ 0", "weights_nonzero"), ("gate", "gate"),
           ("gate_vs_backend", "gate_vs_backend")]
RUNTIME = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "torch": "torch"}


def _columns(rows: list[Row], columns: list[tuple], cell: Callable[[Row], str] = lambda r: r["cell"]) -> str:
    """A table of `columns`: (header, snapshot column[, formatter other than the column's own])."""
    def text(r: Row, c: tuple) -> str:
        return cell(r) if c[1] == "cell" else (c[2] if len(c) > 2 else FORMATS.get(c[1], str))(r[c[1]])

    return markdown_table([c[0] for c in columns], [[text(r, c) for c in columns] for r in rows])


def view_quantization() -> str:
    return _columns(with_gates(snapshot("quantization")), QUANTIZATION)


def view_quantization_pass() -> str:
    """The rows that pass both gates, fastest first: where the precision itself pays."""
    rows = [r for r in with_gates(snapshot("quantization")) if r["gate_vs_backend"] == "PASS"]
    rows.sort(key=lambda r: -float(r["speedup_vs_backend_fp32"]))
    return markdown_table(["row", "speedup vs same runtime fp32", "NAB Δ"], [
        [f"{RUNTIME[r['backend']]} {r['precision'].upper() if r['precision'] == 'int8' else r['precision']}"
         f"{' ' + r['cell'].rsplit('-', 1)[1] if r['cell'].endswith(('-dynamic', '-static')) else ''}",
         fmt("speedup_vs_backend_fp32", r["speedup_vs_backend_fp32"]), fmt("nab_standard_delta_pct", r["nab_standard_delta_pct"])]
        for r in rows])


def view_pruning() -> str:
    return _columns(with_gates(snapshot("pruning")), PRUNING, lambda r: r["cell"].split(".", 1)[1])


def view_pruning_structured() -> str:
    """The structured rows in fp32, by share of units removed."""
    rows = [r for r in snapshot("pruning") if r["pruning"].startswith("structured") and r["precision"] == "fp32"]
    return markdown_table(["units removed", "runtime", "speedup vs its runtime's fp32", "NAB Δ"], [
        [f"{float(r['pruning'].split()[1]):.0%}", RUNTIME[r["backend"]], fmt("speedup_vs_backend_fp32", r["speedup_vs_backend_fp32"]),
         fmt("nab_standard_delta_pct", r["nab_standard_delta_pct"])] for r in rows])


VIEWS: dict[str, Callable[[], str]] = {
    "quantization": view_quantization, "quantization-pass": view_quantization_pass,
    "pruning": view_pruning, "pruning-structured": view_pruning_structured,
}


# --- rendering -----------------------------------------------------------------------------------------------------
def table(name: str) -> str:
    if name in VIEWS:
        return VIEWS[name]()
    rows = snapshot(name)
    header = [c for c in rows[0] if c != "key"] if rows else []
    return markdown_table(header, [[r[c] for c in header] for r in rows])


def figure(spec: str, where: str) -> str:
    """One figure in prose: `NAME KEY COLUMN` (shell quoting), bold marks dropped."""
    try:
        name, key, column = shlex.split(spec)
    except ValueError:
        raise SystemExit(f"{where}: a figure marker needs NAME KEY COLUMN, got {spec!r}") from None
    rows = [r for r in snapshot(name) if r.get("key", r.get("cell")) == key]
    if len(rows) != 1 or column not in rows[0]:
        raise SystemExit(f"{where}: docs/figures/{name}.csv has no single row {key!r} with a column {column!r}")
    return fmt(column, rows[0][column]).replace("**", "")


def render(text: str, where: str) -> str:
    def block(m: re.Match) -> str:  # indented as its marker (a table inside a list item)
        rendered = "".join(m.group(1) + line for line in table(m.group(3)).splitlines(True))
        return m.group(1) + m.group(2) + "\n" + rendered + "\n" + m.group(5)

    text = BLOCK.sub(block, text)
    return INLINE.sub(lambda m: m.group(1) + figure(m.group(2), where) + m.group(4), text)


def stale(text: str, rendered: str, path: Path) -> list[str]:
    """One line per marked table or figure whose text differs from its rendering."""
    old = [m.group(0) for m in BLOCK.finditer(text)] + [m.group(0) for m in INLINE.finditer(text)]
    new = [m.group(0) for m in BLOCK.finditer(rendered)] + [m.group(0) for m in INLINE.finditer(rendered)]
    rel = path.relative_to(REPO)
    return [f"{rel}:{text[:text.index(o)].count(chr(10)) + 1}: {o.splitlines()[0][:60]}... differs from its snapshot"
            for o, n in zip(old, new) if o != n]


EXAMPLE_COLUMNS = ("cell", "nab_standard", "nab_reward_low_FP_rate", "nab_reward_low_FN_rate", "nab_standard_cv", "f1",
                   "alert_precision", "recall", "fp_events", "recall_by_kind")


def example() -> None:
    """Run the quickstart into a temporary folder; keep its table's headline columns as the example snapshot and its
    report as docs/example/report.html (`harness report`; a plain rendering of table.md where this build lacks it)."""
    import subprocess
    import tempfile

    sys.path.insert(0, str(REPO))
    from harness.atomic import write_text

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "quickstart"
        env = {**__import__("os").environ, "HARNESS_HISTORY": "off"}
        harness = [sys.executable, "-m", "harness"]
        subprocess.run([*harness, "run", "scenarios/quickstart.yaml", "--out", str(run)], cwd=REPO, env=env, check=True)
        with (run / "table.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        lines = [",".join(EXAMPLE_COLUMNS)] + [",".join(_csv_cell(r.get(c, "")) for c in EXAMPLE_COLUMNS) for r in rows]
        write_text(FIGURES / "example.csv", "\n".join(lines) + "\n")
        out = REPO / "docs" / "example" / "report.html"
        has_report = subprocess.run([*harness, "report", "--help"], capture_output=True, env=env).returncode == 0
        if has_report:
            subprocess.run([*harness, "report", str(run), "--out", str(out)], cwd=REPO, env=env, check=True)
        else:
            import markdown

            body = markdown.markdown((run / "table.md").read_text() + "\n\n" + (run / "leaderboard.md").read_text(),
                                     extensions=["tables"])
            write_text(out, "<!doctype html><meta charset=utf-8><title>quickstart</title>"
                       "<p>An interim page: this build has no <code>harness report</code>; the run's tables follow.</p>"
                       + body + "\n")


def _csv_cell(value: str) -> str:
    try:
        value = f"{float(value):.4g}" if value not in ("", "nan") else ""
    except ValueError:
        pass
    return f'"{value}"' if "," in value else value


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    check = argv == ["--check"]
    if argv == ["--example"]:
        example()
        argv = []
    if argv and not check:
        print("usage: python docs/tools/figures.py [--check | --example]", file=sys.stderr)
        return 2
    problems = []
    for path in documents():
        text = path.read_text()
        rendered = render(text, str(path.relative_to(REPO)))
        if rendered != text:
            problems += stale(text, rendered, path)
            if not check:
                from harness.atomic import write_text

                write_text(path, rendered)
    for line in problems:
        print(line if check else "rewrote " + line.split(": ", 1)[0], file=sys.stderr if check else sys.stdout)
    return 1 if check and problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
