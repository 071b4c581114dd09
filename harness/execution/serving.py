"""Ray Serve from the driver: deploy a variant's scoring service (serve/app.py), find its replicas' processes,
and take it down. Like the runner, this is Ray code; what a service computes lives in harness.streams.

Serve's HTTP proxy runs on the head node only (`HeadOnly`) and listens on the ServeSpec's host, 127.0.0.1 unless
the user asks otherwise: nothing is reachable from outside the machine by default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.serving import ServiceConfig


@dataclass
class Service:
    """A deployed scoring application."""

    name: str
    url: str  # the POST /v1/score endpoint
    config: ServiceConfig
    deploy_s: float

    @property
    def status_url(self) -> str:
        return self.url.rsplit("/v1/score", 1)[0] + "/v1/status"

    def handle(self):
        from ray import serve

        return serve.get_app_handle(self.name)

    def replicas(self) -> list[dict[str, Any]]:
        """Every replica of the service, and the proxy: deployment, actor name, pid, node id."""
        from ray.util.state import list_actors

        out = []
        for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000):
            cls = a.class_name or ""
            if cls == "ProxyActor" or (f":{self.name}:" in (a.name or "") or (a.name or "").startswith(f"SERVE_REPLICA::{self.name}#")):
                out.append({"deployment": "proxy" if cls == "ProxyActor" else (a.name.split("#")[1] if "#" in a.name else cls),
                            "actor": a.name, "pid": a.pid, "node_id": a.node_id})
        return out


def start_serve(host: str, port: int) -> None:
    from ray import serve

    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")


def deploy(config: ServiceConfig, name: str, route_prefix: str | None = None) -> Service:
    """Deploy `config` as application `name` (route `/<name>` unless given) and wait until it runs."""
    from ray import serve

    from serve.app import build_app

    import ray

    from harness.errors import InputError

    have = ray.cluster_resources().get("CPU", 0.0)
    if config.serve.cpus > have:
        raise InputError(f"the deployment reserves {config.serve.cpus:g} Ray CPUs (shards x cpus_per_shard + "
                         f"ingress_replicas x cpus_per_ingress); the cluster has {have:g}", field="serve")
    started = time.perf_counter()
    start_serve(config.serve.host, config.serve.port)
    prefix = route_prefix if route_prefix is not None else f"/{name}"
    serve.run(build_app(config.model_dump(mode="json")), name=name, route_prefix=prefix)
    host = config.serve.host if config.serve.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{config.serve.port}{prefix.rstrip('/')}/v1/score"
    return Service(name, url, config, time.perf_counter() - started)


def undeploy(name: str) -> None:
    """Delete application `name` if it is deployed (a deploy interrupted half-way included)."""
    from ray import serve

    if name in serve.status().applications:
        serve.delete(name)
