"""The committed Grafana dashboards are exactly what clusters/monitoring/dashboards.py generates now (Grafana's own
SDK), so they cannot drift from the code that defines them; the provisioning folder names them and the data source
every panel reads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[1] / "clusters" / "monitoring"


def generator():
    spec = importlib.util.spec_from_file_location("dashboards", MONITORING / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_dashboards_are_the_generated_ones() -> None:
    made = generator().render()
    committed = {p.name: p.read_text() for p in (MONITORING / "grafana" / "dashboards").glob("*.json")}
    assert sorted(committed) == sorted(made), "run: python clusters/monitoring/dashboards.py"
    for name, text in made.items():
        assert committed[name] == text, f"{name} differs from the generator's output: python clusters/monitoring/dashboards.py"


def test_provisioning_points_grafana_at_the_dashboards_and_their_data_source() -> None:
    sources = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert [(s["uid"], s["type"]) for s in sources["datasources"]] == [(generator().DATASOURCE_UID, "prometheus")]
    providers = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "dashboards" / "harness.yml").read_text())
    assert [p["options"]["path"] for p in providers["providers"]] == ["${HARNESS_REPO}/clusters/monitoring/grafana/dashboards"]
    uids = {json.loads(p.read_text())["uid"] for p in (MONITORING / "grafana" / "dashboards").glob("*.json")}
    assert uids == {"harness-serving", "harness-runs", "harness-ray"}
