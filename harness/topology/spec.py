"""A topology file (`clusters/local-cloud-edge.yaml`): the nodes of a local Ray cluster, each in its own network
namespace, with its labels, CPU and memory limits and the link that joins it to the others."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import InputError

NAME = r"^[a-z][a-z0-9-]{0,19}$"  # short: it names namespaces and cgroups


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Link(_Strict):
    """The shaping of a node's link, in each direction's share: delay (half each way), jitter, bandwidth."""

    delay_ms: float = Field(0.0, ge=0.0, le=10_000.0, description="added round-trip delay")
    jitter_ms: float = Field(0.0, ge=0.0, le=10_000.0, description="random spread of that delay (+-)")
    rate_mbit: float | None = Field(None, gt=0.0, description="bandwidth each way")


class NodeSpec(_Strict):
    labels: dict[str, str] = Field(default_factory=dict, description="Ray node labels (ray start --labels)")
    head: bool = False
    client: bool = Field(False, description="where `harness cluster exec` runs commands: the driver and the load generators")
    cpus: float = Field(1.0, gt=0.0, description="CPUs Ray offers; also the node's CPU limit (cpuset for whole CPUs, else a quota)")
    cpuset: str | None = Field(None, pattern=r"^[0-9]+([-,][0-9]+)*$", description="the cores it runs on, e.g. '1' or '0-1' (default: the last `cpus` cores)")
    memory: int | None = Field(None, gt=0, description="the node's memory limit (cgroup) and what Ray offers: 512MiB, 3GiB...")
    link: Link = Field(default_factory=Link)

    @field_validator("memory", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> Any:
        from harness.targets import parse_bytes

        return parse_bytes(v) if isinstance(v, str) else v


class Topology(_Strict):
    name: str = Field(pattern=NAME)
    subnet: str = "10.231.0.0/24"
    auth: Literal["token", "disabled"] = "token"
    service_ports: list[int] = Field([8000], description="TCP ports of services on the nodes (Ray Serve's HTTP), reached through the link")
    nodes: dict[str, NodeSpec] = Field(min_length=1)

    @field_validator("subnet")
    @classmethod
    def _private(cls, v: str) -> str:
        net = ipaddress.ip_network(v)
        if not net.is_private or net.version != 4 or net.num_addresses < 8:
            raise ValueError(f"expected a private IPv4 subnet of 8 addresses or more, got {v}")
        return v

    @model_validator(mode="after")
    def _shape(self) -> Topology:
        import re

        for name in self.nodes:
            if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", name):
                raise ValueError(f"node name {name!r}: expected up to 10 lowercase letters and digits")
        heads = [n for n, s in self.nodes.items() if s.head]
        if len(heads) != 1:
            raise ValueError(f"expected exactly one node with head: true, got {len(heads)}")
        if sum(s.client for s in self.nodes.values()) > 1:
            raise ValueError("expected at most one node with client: true")
        if len(self.nodes) + 2 > ipaddress.ip_network(self.subnet).num_addresses:
            raise ValueError(f"subnet {self.subnet} is too small for {len(self.nodes)} nodes")
        return self

    @property
    def head(self) -> str:
        return next(n for n, s in self.nodes.items() if s.head)

    @property
    def client(self) -> str:
        return next((n for n, s in self.nodes.items() if s.client), self.head)


def load_topology(path: str | Path) -> Topology:
    """The topology file, validated; one InputError line naming the file and field otherwise."""
    from harness.errors import field_error
    from harness.yamlfile import read_yaml_mapping

    data, _ = read_yaml_mapping(path)
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        field, msg = field_error(exc)
        raise InputError(msg, path, field or None) from None
