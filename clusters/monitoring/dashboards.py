"""The Grafana dashboards of a harness deployment, as code (Grafana's own SDK, `grafana-foundation-sdk`):

- serving: the scoring service's own metrics (docs/serving.md#metrics) and Serve's;
- runs: a `harness run --metrics-port` run's cells, load figures and SLA verdicts (docs/targets.md#metrics);
- ray: the cluster's nodes, their CPU and memory.

    python clusters/monitoring/dashboards.py          # writes clusters/monitoring/grafana/dashboards/*.json

The JSON files are generated, never edited: tests/test_dashboards.py fails when they differ from what this script
writes now, and tests/test_monitoring_live.py asks a real Prometheus every panel's query. Every panel reads the
data source provisioned as uid `prometheus` (grafana/provisioning/datasources/prometheus.yml).
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"
DATASOURCE_UID = "prometheus"
RATE = "1m"  # the window of every rate(): several scrapes at Prometheus' 5 s (clusters/monitoring/prometheus.yml)

# (title, unit, [(PromQL, legend)]) per panel, per dashboard
SERVE = "application, target"
SERVING = [
    ("Requests/s by code", "reqps", [(f"sum by ({SERVE}, code) (rate(ray_harness_serve_requests_total[{RATE}]))",
                                      "{{application}} {{target}} {{code}}")]),
    ("Latency in the ingress", "ms", [
        (f"histogram_quantile({q}, sum by ({SERVE}, le) (rate(ray_harness_serve_request_latency_ms_bucket[{RATE}])))",
         f"{{{{application}}}} {{{{target}}}} p{round(q * 100)}") for q in (0.5, 0.95, 0.99)]),
    ("Events scored/s", "short", [(f"sum by ({SERVE}) (rate(ray_harness_serve_events_total[{RATE}]))",
                                   "{{application}} {{target}}")]),
    ("Errors/s by reason (shed apart)", "reqps", [
        (f"sum by ({SERVE}, reason) (rate(ray_harness_serve_errors_total[{RATE}]))", "{{application}} {{target}} {{reason}}")]),
    ("Shed/s (503 + Retry-After)", "reqps", [(f"sum by ({SERVE}) (rate(ray_harness_serve_shed_total[{RATE}]))",
                                              "{{application}} {{target}}")]),
    ("Streams held", "short", [(f"sum by ({SERVE}, shard) (ray_harness_serve_streams)", "{{application}} {{target}} shard {{shard}}")]),
    ("Warming streams", "short", [(f"sum by ({SERVE}, shard) (ray_harness_serve_warming_streams)",
                                   "{{application}} {{target}} shard {{shard}}")]),
    ("Replica starts (restarts: beyond 1)", "short", [
        (f"sum by ({SERVE}, deployment) (ray_harness_serve_replica_starts_total)", "{{application}} {{target}} {{deployment}}")]),
    ("Healthy replicas (Serve)", "short", [("sum by (application, deployment) (ray_serve_deployment_replica_healthy)",
                                            "{{application}} {{deployment}}")]),
    ("HTTP requests/s at Serve's proxy", "reqps", [
        (f"sum by (application) (rate(ray_serve_num_http_requests_total[{RATE}]))", "{{application}}")]),
]
LOAD = "scenario, cell, target"
RUNS = [
    ("Cells planned and finished", "short", [("sum by (scenario) (harness_cells_planned)", "{{scenario}} planned"),
                                             ("sum by (scenario, status) (harness_cells_finished_total)", "{{scenario}} {{status}}")]),
    ("Load: events/s achieved", "short", [(f"sum by ({LOAD}, path) (harness_load_achieved_eps)", "{{cell}} {{path}}")]),
    ("Load: requests/s achieved", "reqps", [(f"sum by ({LOAD}, path) (harness_load_achieved_rps)", "{{cell}} {{path}}")]),
    ("Load: latency", "ms", [(f"max by ({LOAD}, path, quantile) (harness_load_latency_ms)", "{{cell}} {{path}} q{{quantile}}")]),
    ("Load: errors/s and shed/s", "reqps", [
        (f"sum by ({LOAD}) (rate(harness_load_errors_total[{RATE}]))", "{{cell}} errors"),
        (f"sum by ({LOAD}) (rate(harness_load_shed_total[{RATE}]))", "{{cell}} shed")]),
    ("SLA verdicts (1 met, 0 failed)", "short", [("min by (scenario, cell, target, objective) (harness_sla_ok)",
                                                   "{{cell}} {{objective}}")]),
]
RAY = [
    ("Nodes alive", "short", [("max(ray_cluster_active_nodes)", "nodes")]),
    ("Node CPU", "percent", [("max by (instance) (ray_node_cpu_utilization)", "{{instance}}")]),
    ("Node memory used", "bytes", [("max by (instance) (ray_node_mem_used)", "{{instance}}"),
                                   ("max by (instance) (ray_node_mem_total)", "{{instance}} total")]),
]
DASHBOARDS = {"harness-serving": ("Harness: serving", SERVING), "harness-runs": ("Harness: runs", RUNS),
              "harness-ray": ("Harness: Ray nodes", RAY)}


def dashboard(uid: str, title: str, panels: list) -> dict:
    """One dashboard as Grafana's JSON model, built with the SDK."""
    from grafana_foundation_sdk.builders.dashboard import Dashboard
    from grafana_foundation_sdk.builders.prometheus import Dataquery
    from grafana_foundation_sdk.builders.timeseries import Panel
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    source = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    board = Dashboard(title).uid(uid).tags(["harness", "generated"]).refresh("5s").time("now-15m", "now")
    for name, unit, queries in panels:
        panel = Panel().title(name).unit(unit).datasource(source).height(8).span(12)
        for ref, (expr, legend) in zip("ABCDEFGH", queries):
            panel = panel.with_target(Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(source))
        board = board.with_panel(panel)
    return json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))


def render() -> dict[str, str]:
    """File name -> the JSON text of every dashboard."""
    return {f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2, sort_keys=True) + "\n"
            for uid, (title, panels) in DASHBOARDS.items()}


def queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard's JSON."""
    return [(p["title"], t["expr"]) for p in board.get("panels", []) for t in p.get("targets", [])]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name)


if __name__ == "__main__":
    main()
