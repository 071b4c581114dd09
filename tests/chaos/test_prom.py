"""The chaos tests' Prometheus runner itself: a rule whose expression holds fires, one that does not stays quiet,
and a rule's `for:` is cut so the test need not wait out production's debounce."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.chaos.prom import Prometheus
from tests.conftest import can_isolate, require, REQUIREMENTS

EXPORTER = ("import time, prometheus_client as p; g = p.Gauge('chaos_probe', 'x'); g.set(3); "
            "p.start_http_server(9101, addr='127.0.0.1'); time.sleep(120)")


@pytest.fixture
def netns():
    require(can_isolate(), REQUIREMENTS["needs_netns"][1])
    ns = f"chaos-prom-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_rules_fire_on_real_series_with_their_debounce_cut(netns: str, tmp_path: Path) -> None:
    rules = tmp_path / "probe.yml"
    rules.write_text("groups:\n- name: probe\n  rules:\n"
                     "  - alert: ProbeHigh\n    expr: chaos_probe > 2\n    for: 10m\n    labels: {severity: page}\n"
                     "  - alert: ProbeLow\n    expr: chaos_probe < 2\n")
    enter = ["ip", "netns", "exec", netns]
    exporter = subprocess.Popen([*enter, sys.executable, "-c", EXPORTER], start_new_session=True)
    try:
        with Prometheus(tmp_path / "prom", enter, static={"probe": ["127.0.0.1:9101"]}, rules=[rules]) as prom:
            fired = prom.wait_firing("ProbeHigh", timeout_s=20, severity="page")
            assert fired["labels"]["job"] == "probe"
            assert prom.query("chaos_probe")[0]["value"][1] == "3"
            assert prom.firing("ProbeLow") == []
            assert prom.targets_up() == {"probe": ["up"]}
            exporter.kill()
            exporter.wait()
            prom.wait_resolved("ProbeHigh", timeout_s=20)  # fails unless the alert stops once its series vanishes
    finally:
        if exporter.poll() is None:
            exporter.kill()

