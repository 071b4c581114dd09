"""What `harness cluster up` made, recorded so that `down` removes exactly that, `exec` knows where to run, and a
run on the topology can record the shaping it met (`harness.serving.deploy.network_to`)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from harness.topology.spec import Link


class NodeState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    namespace: str
    ip: str
    labels: dict[str, str]
    cpus: float
    cpuset: str | None = None
    memory_bytes: int | None = None
    link: Link | None = None  # None: no shaping
    head: bool = False
    client: bool = False
    cgroup: str | None = None  # the node's group name in each controller it is limited by
    controllers: list[str] = Field(default_factory=list)
    pids: list[int] = Field(default_factory=list)  # process-group leaders: `ray start --block`, relays


class TopologyState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    file: str
    method: str  # "netem" or "relay": how delay and jitter are applied
    delays: str = ""  # what that method delays, in words (`harness cluster status` shows it)
    hub: str  # the namespace holding the bridge
    head_address: str  # GCS host:port
    auth: str
    token: str | None = None
    temp_root: str  # Ray's temp dirs live under it
    service_ports: list[int]
    veths: list[str] = Field(default_factory=list)
    nodes: list[NodeState] = Field(default_factory=list)

    def node_by_ip(self, ip: str | None) -> NodeState | None:
        return next((n for n in self.nodes if n.ip == ip), None)

    @property
    def client(self) -> NodeState:
        return next((n for n in self.nodes if n.client), next(n for n in self.nodes if n.head))

    def environment(self) -> dict[str, str]:
        """What a process joining the cluster needs: its address and authentication, no usage stats."""
        env = {"RAY_ADDRESS": self.head_address, "RAY_AUTH_MODE": self.auth, "RAY_USAGE_STATS_ENABLED": "0"}
        if self.token:
            env["RAY_AUTH_TOKEN"] = self.token
        return env


def state_dir() -> Path:
    return Path(os.environ.get("HARNESS_STATE_DIR") or Path.home() / ".cache" / "harness" / "clusters")


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def save_state(state: TopologyState) -> Path:
    """Atomically, readable by its owner only (it holds the cluster's token)."""
    from harness.atomic import write_text

    path = state_path(state.name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_text(path, state.model_dump_json(indent=2), private=True)  # 0600 from its first byte
    return path


def load_state(path: str | Path) -> TopologyState:
    """The state file `harness cluster up` wrote (`harness cluster exec` names it in $HARNESS_TOPOLOGY)."""
    return TopologyState.model_validate_json(Path(path).read_text())
