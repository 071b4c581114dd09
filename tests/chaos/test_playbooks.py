"""docs/playbooks.md stays true: every failure mode the issue names has a playbook with each part an on-call engineer
needs; every alert rule points at a playbook; every alert and test a playbook names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.chaos.prom import alert_rules

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "docs" / "playbooks.md"
MODES = ("replica-crash", "edge-node-lost", "edge-link-degraded", "edge-cpu-starved", "edge-memory-exhausted", "overload",
         "slow-clients", "accuracy-regression", "alert-storm", "feedback-late", "ray-head-lost", "token-mismatch",
         "results-disk-full", "history-corrupt")
PARTS = ("Symptom", "Signal", "Diagnosis", "Fix", "Measured time to recover", "Proven by")


def sections() -> dict[str, str]:
    """anchor -> the text of its section (from its `<a id>` to the next one)."""
    text = PLAYBOOKS.read_text()
    found = list(re.finditer(r'^<a id="([a-z0-9-]+)"></a>\n## ', text, flags=re.M))
    return {m.group(1): text[m.start(): found[i + 1].start() if i + 1 < len(found) else len(text)] for i, m in enumerate(found)}


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")}


def test_every_failure_mode_has_a_complete_playbook() -> None:
    found = sections()
    assert [m for m in MODES if m not in found] == [], "failure modes without a playbook"
    for anchor, text in found.items():
        missing = [p for p in PARTS if not re.search(rf"\*\*{p}\.?\*\*", text)]
        assert not missing, f"playbook {anchor} lacks {missing}"


def test_every_named_test_and_alert_exists() -> None:
    rules = alert_rules()
    for anchor, text in sections().items():
        proven = re.split(r"\*\*Proven by\.?\*\*", text, maxsplit=1)[1]
        ids = re.findall(r"(tests/[\w/]+\.py)::(\w+)", proven)
        assert ids, f"playbook {anchor}: Proven by names no test (tests/...py::test_name)"
        for path, name in ids:
            assert (REPO / path).is_file() and name in _test_names(REPO / path), f"playbook {anchor}: {path}::{name} does not exist"
        for alert in set(re.findall(r"\bHarness[A-Z]\w+", text)):
            assert alert in rules, f"playbook {anchor} names alert {alert}, which no rule in clusters/monitoring/alerts defines"


def test_every_alert_rule_points_at_a_playbook() -> None:
    anchors = set(sections())
    rules = alert_rules()
    assert rules, "no alert rules found"
    for name, rule in rules.items():
        assert rule["labels"]["playbook"] in anchors, f"{rule['file']}: {name}'s playbook {rule['labels']['playbook']!r} is not in docs/playbooks.md"
