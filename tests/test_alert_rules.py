"""The monitoring folder's alert rules, checked by Prometheus's own tool: every rule file parses and its
expressions are valid PromQL (`promtool check rules`), prometheus.yml loads them (`promtool check config`), and
every group's unit tests pass (`promtool test rules`), each alert firing on series that should fire it and staying
quiet on series that should not. Also the contract every alert keeps: labels `severity` and `playbook`, a
`summary`, and unit tests of its own (that its playbook has a section: tests/chaos/test_playbooks.py).

promtool is Debian's `prometheus` package (`apt-get install prometheus`); without it these tests skip, or fail
under CI=true.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require

MONITORING = REPO / "clusters" / "monitoring"
ALERTS = MONITORING / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yml"))


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    require(shutil.which("promtool") is not None, "promtool not on PATH (apt-get install prometheus)")
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120)


def alerts(path: Path) -> list[dict]:
    doc = yaml.safe_load(path.read_text()) or {}
    return [r for g in doc.get("groups", []) for r in g.get("rules", []) if "alert" in r]


def test_there_are_rule_files_and_tests() -> None:
    assert RULE_FILES, f"no alert rules in {ALERTS}"
    assert TEST_FILES, f"no promtool unit tests in {ALERTS / 'tests'}"


def test_rules_are_valid_promql() -> None:
    done = promtool("check", "rules", *RULE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_loads_every_rule_file() -> None:
    done = promtool("check", "config", MONITORING / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    for path in RULE_FILES:  # promtool lists each rule file it loaded through rule_files
        assert f"Checking {path.relative_to(REPO)}" in done.stdout or f"Checking {path}" in done.stdout, (path, done.stdout)


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_alert_unit_tests_pass(test_file: Path) -> None:
    done = promtool("test", "rules", test_file)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_every_alert_is_unit_tested_firing_and_quiet(rule_file: Path) -> None:
    """The group's tests/<group>.test.yml has, for each alert, a case where it fires and one where it must not."""
    test_file = ALERTS / "tests" / f"{rule_file.stem}.test.yml"
    assert test_file.is_file(), f"{rule_file.name} has no unit tests ({test_file.relative_to(REPO)})"
    cases = [c for t in (yaml.safe_load(test_file.read_text()) or {}).get("tests", []) for c in t.get("alert_rule_test", [])]
    for rule in alerts(rule_file):
        name = rule["alert"]
        mine = [c for c in cases if c.get("alertname") == name]
        assert any(c.get("exp_alerts") for c in mine), f"{test_file.name}: no case where {name} fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{test_file.name}: no case where {name} stays quiet"


def test_every_alert_names_severity_playbook_and_summary() -> None:
    """That the playbook named has a section in docs/playbooks.md is tests/chaos/test_playbooks.py's check."""
    names: list[str] = []
    for path in RULE_FILES:
        for rule in alerts(path):
            name, labels = rule["alert"], rule.get("labels", {})
            names.append(name)
            assert labels.get("severity") in ("info", "warning", "critical"), f"{path.name}: {name} severity"
            assert re.fullmatch(r"[a-z0-9-]+", labels.get("playbook", "")), f"{path.name}: {name}'s playbook is not an anchor"
            assert rule.get("annotations", {}).get("summary"), f"{path.name}: {name} has no summary"
    assert len(names) == len(set(names)), f"an alert name is used twice: {sorted(names)}"
