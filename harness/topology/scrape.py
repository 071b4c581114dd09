"""Where Prometheus scrapes a local topology's Ray metrics: each node's metrics export port (as Ray wrote it under
the node's temp dir at its start), labelled with the node's name and its Ray labels (`tier`), so alert rules can
say "the edge" (clusters/monitoring/alerts/edge.yml). Ray's own service-discovery file has the addresses but no
labels.

    harness cluster targets local-cloud-edge --out /tmp/harness-nodes.json   # job ray-nodes' file_sd_configs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.topology.state import NodeState, TopologyState


def metrics_port(state: TopologyState, node: NodeState) -> int | None:
    """The node's current metrics export port: the newest `metrics_export_port_<node id>` of its session (a
    restarted node is a new Ray node, with a file of its own); None before Ray wrote it."""
    files = sorted(Path(state.temp_root, node.name, "session_latest").glob("metrics_export_port_*"),
                   key=lambda p: p.stat().st_mtime)
    for path in reversed(files):
        text = path.read_text().strip()
        if text.isdigit():
            return int(text)
    return None


def prometheus_targets(state: TopologyState) -> list[dict[str, Any]]:
    """A Prometheus file_sd document: one entry per node whose port is known, `node` and its labels attached."""
    out = []
    for node in state.nodes:
        port = metrics_port(state, node)
        if port is not None:
            out.append({"targets": [f"{node.ip}:{port}"], "labels": {"topology": state.name, "node": node.name, **node.labels}})
    return out


def write_targets(state: TopologyState, path: str | Path) -> list[dict[str, Any]]:
    """Write the file_sd document atomically (Prometheus re-reads a file that changes)."""
    import json

    from harness.atomic import write_text

    doc = prometheus_targets(state)
    write_text(Path(path), json.dumps(doc, indent=1))
    return doc
