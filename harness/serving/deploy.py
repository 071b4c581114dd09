"""Ray Serve from the driver: deploy a variant's scoring service (harness.serving.app), find its replicas'
processes, and take it down. `harness serve` and the load task (through harness.execution.serving_cluster) both
deploy here.

Serve's HTTP proxy runs on the head node only (`HeadOnly`) and listens on the ServeSpec's host, 127.0.0.1 unless
the user asks otherwise: nothing is reachable from outside the machine by default. A service on a target (node
labels) runs its replicas on the target's nodes and is called through the proxy of one of them: proxies then run
on every node (`EveryNode`), and the URL is that node's address (127.0.0.1 when it is the driver's own node). On
a real cluster, a remote node's proxy answers there only with `serve.host: 0.0.0.0`; on `harness cluster up`'s
topology, the relay in each node's namespace forwards the node's address to its loopback proxy (docs/topology.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from harness.serving.config import ServiceConfig


@dataclass
class Service:
    """A deployed scoring application."""

    name: str
    url: str  # the POST /v1/score endpoint
    config: ServiceConfig
    deploy_s: float
    network: dict[str, Any] | None = None  # the shaping on the way from this node to the service (NetworkFigures)

    @property
    def status_url(self) -> str:
        return self.url.rsplit("/v1/score", 1)[0] + "/v1/status"

    def replicas(self) -> list[dict[str, Any]]:
        """Every replica of the service, and the proxy: deployment ("proxy" for the proxy), pid, node id.
        (Serve's named actors, asked for their pid: this needs no dashboard.)"""
        import os

        import ray

        out = []
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if name.startswith("SERVE_PROXY_ACTOR"):
                deployment = "proxy"
            elif name.startswith(f"SERVE_REPLICA::{self.name}#"):
                deployment = name.split("#")[1]
            else:
                continue
            actor = ray.get_actor(name, namespace=entry["namespace"])
            pid, node = ray.get(actor.__ray_call__.remote(lambda self: (os.getpid(), ray.get_runtime_context().get_node_id())))
            out.append({"deployment": deployment, "pid": pid, "node_id": node})
        return out


def check_port(config: ServiceConfig, app: str | None = None) -> None:
    """Refuse, with one InputError line, a service that would not be the only one on its address: Serve's proxy
    binds with SO_REUSEPORT, so a second Serve on a busy port starts silently and the kernel splits the
    connections between two unrelated services. Serve already running on this cluster must use the same host
    and port (a route of its own is fine), and must not hold `app` already (another `harness serve`); otherwise
    the port must be free on this host (the head node, where the proxy starts)."""
    from harness.errors import InputError

    field = "--port" if app is not None else "serve.port"
    host, port = config.serve.host, config.serve.port
    running = _running_http_options()
    if running is None:
        if _on_head_node():
            check_free(host, port, field)
        return
    if (running.host, running.port) != (host, port):
        raise InputError(f"Serve already runs on this cluster with its proxy on {running.host}:{running.port}; "
                         f"serve there (--host {running.host} --port {running.port}) or on another cluster", field=field)
    if app is not None and _wait_while_deleting(app):
        raise InputError(f"this cluster already serves application {app!r} on port {port} (another `harness "
                         "serve`?): stop that one first", field=field)


def _wait_while_deleting(app: str, timeout_s: float = 90.0) -> bool:
    """Whether application `app` runs on this cluster; one being deleted (a `harness serve` that just stopped:
    Serve drains it for up to ~30 s) is waited for, saying so, rather than taken for a rival."""
    import sys

    from ray import serve

    deadline, said = time.monotonic() + timeout_s, False
    while True:
        status = serve.status().applications.get(app)
        if status is None:
            return False
        if getattr(status.status, "value", status.status) != "DELETING" or time.monotonic() > deadline:
            return True
        if not said:
            print(f"harness: waiting for Serve to finish deleting the previous application {app!r}", file=sys.stderr)
            said = True
        time.sleep(0.5)


def _running_http_options() -> Any:
    """The HTTP options of the Serve instance running on this cluster, or None when none runs."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None
    return ray.get(controller.get_http_config.remote())


def _on_head_node() -> bool:
    import ray

    here = ray.get_runtime_context().get_node_id()
    return any(n["NodeID"] == here and "node:__internal_head__" in n.get("Resources", {}) for n in ray.nodes())


def check_free(host: str, port: int, field: str) -> None:
    """InputError unless `host:port` can be bound without SO_REUSEPORT (a listener there, even one that set
    SO_REUSEPORT itself, makes the bind fail)."""
    import socket

    from harness.errors import InputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a connection in TIME_WAIT is no conflict
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            raise InputError(f"{host}:{port} is already in use ({exc.strerror or exc}: another `harness serve`, or "
                             "another program): choose another port", field=field) from None


def start_serve(host: str, port: int, every_node: bool = False) -> None:
    from ray import serve

    serve.start(http_options={"host": host, "port": port}, proxy_location="EveryNode" if every_node else "HeadOnly")


def deploy(config: ServiceConfig, name: str, route_prefix: str | None = None, exclusive_app: str | None = None,
           on_start: Any = None) -> Service:
    """Deploy `config` as application `name` (route `/<name>` unless given) and wait until it runs, after
    `check_port` (with `exclusive_app`: refuse when the cluster serves that application already). `on_start()` is
    called once the deployment is asked for: from then on there is something to take down."""
    import ray
    from ray import serve

    from harness.errors import InputError
    from harness.execution.placement import matching_nodes
    from harness.tasks.base import Needs
    from harness.serving.app import build_app

    nodes = matching_nodes(Needs(labels=config.labels), ray.nodes())
    where = " on the nodes labelled " + ", ".join(f"{k}={v}" for k, v in config.labels.items()) if config.labels else ""
    have = sum(n.get("Resources", {}).get("CPU", 0.0) for n in nodes)
    if config.serve.cpus > have:
        raise InputError(f"the deployment reserves {config.serve.cpus:g} Ray CPUs (shards x cpus_per_shard + "
                         f"ingress_replicas x cpus_per_ingress); the cluster has {have:g}{where}", field="serve")
    check_port(config, exclusive_app)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the driver's own "deploying..." lines; errors still show
    started = time.perf_counter()
    start_serve(config.serve.host, config.serve.port, every_node=bool(config.labels))
    prefix = route_prefix if route_prefix is not None else f"/{name}"
    if on_start is not None:
        on_start()
    serve.run(build_app(config.model_dump(mode="json")), name=name, route_prefix=prefix)
    host = _proxy_host(config, nodes)
    if host != config.serve.host:
        _wait_for_proxy(host, config.serve.port, config.serve.host)
    url = f"http://{host}:{config.serve.port}{prefix.rstrip('/')}/v1/score"
    return Service(name, url, config, time.perf_counter() - started, network=network_to(host))


def _proxy_host(config: ServiceConfig, nodes: list[dict[str, Any]]) -> str:
    """Where the driver reaches the service: the proxy of the driver's own node when it may host replicas (or
    the service has no target), else the address of the first node of the target."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    loopback = config.serve.host if config.serve.host not in ("0.0.0.0", "::") else "127.0.0.1"
    if not config.labels or any(n["NodeID"] == here for n in nodes):
        return loopback
    return nodes[0]["NodeManagerAddress"]


def _wait_for_proxy(host: str, port: int, host_of_proxies: str, timeout_s: float = 60.0) -> None:
    """A remote node's Serve proxy starts after the node's first replica does: wait until it answers, or say which
    node has none (rather than fail the first request with a closed connection), and what to change when the
    proxies listen on loopback (`host_of_proxies`, serve.host)."""
    import urllib.request

    from harness.serving.config import is_loopback

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/-/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            hint = ("it listens on that node's loopback only: on a multi-host cluster run with --serve-host 0.0.0.0 "
                    "--serve-token-file FILE" if is_loopback(host_of_proxies) else "serve.host must be reachable from the driver")
            raise RuntimeError(f"no Serve proxy answers at {host}:{port} after {timeout_s:g} s, although the service's "
                               f"replicas run on that node ({hint}: docs/targets.md)")
        time.sleep(1.0)


def network_to(host: str) -> dict[str, Any] | None:
    """The shaping a `harness cluster up` topology puts between this process and the node at `host` (from the
    state file `harness cluster exec` names in HARNESS_TOPOLOGY); None on any other cluster."""
    import os

    path = os.environ.get("HARNESS_TOPOLOGY")
    if not path:
        return None
    from harness.topology import load_state

    state = load_state(path)
    node = state.node_by_ip(host)
    if node is None or node.link is None or host.startswith("127."):
        return {"node": node.name if node else host, "method": "none"}
    link = node.link
    return {"node": node.name, "method": state.method, "delay_ms": link.delay_ms, "jitter_ms": link.jitter_ms,
            "rate_mbit": link.rate_mbit}


def undeploy(name: str, wait: bool = True) -> None:
    """Delete application `name` if it is deployed (a deploy interrupted half-way included). Serve's controller
    takes ~30 s here to report an application gone; `wait=False` returns once the deletion is asked for."""
    from ray import serve

    if name in serve.status().applications:
        serve.delete(name, _blocking=wait)
