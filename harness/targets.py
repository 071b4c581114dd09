"""A scenario's targets: node groups its cells run on, chosen by Ray node labels, with the limits their tasks keep
to there (docs/targets.md). `harness.tasks.plan_tasks` turns a target into each task's `Needs`."""

from __future__ import annotations

import re
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TargetSpec(BaseModel):
    """A node group cells run on, chosen by Ray node labels (`ray start --labels tier=edge`), with the limits
    its tasks keep to there."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str] = Field(min_length=1, description="node labels a node of this target has, e.g. {tier: edge}")
    cpus: float | None = Field(None, gt=0.0, description="CPUs a scoring task reserves here (default: the backend's threads, 1 without)")
    threads: int | None = Field(None, ge=1, le=64, description="backend intra-op threads here (replaces the backend entry's threads)")
    memory: int | None = Field(None, gt=0, description="bytes of memory each task reserves here (Ray's memory resource); "
                               "'512MiB', '2GiB' and '1.5GB' are read as bytes")

    @field_validator("labels")
    @classmethod
    def _label_values(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?", str(key)) or not re.fullmatch(r"[A-Za-z0-9._-]*", str(value)):
                raise ValueError(f"label {key}={value}: expected letters, digits, '.', '_' or '-'")
        return {str(k): str(val) for k, val in v.items()}

    @field_validator("memory", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> Any:
        return parse_bytes(v) if isinstance(v, str) else v


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """'512MiB', '2GiB', '1.5GB', '1000' -> bytes; ValueError naming the expected form otherwise."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size like 512MiB, 2GiB or 1.5GB, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def labels_for(targets: Mapping[str, TargetSpec], target: str | None) -> dict[str, str]:
    """The node labels of target `target` (none for no target): what its tasks and its service's replicas ask for."""
    return dict(targets[target].labels) if target else {}
