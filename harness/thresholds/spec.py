"""A scenario's threshold policy entry (`scoring.policies`, docs/thresholds.md): a policy type, its parameters, and
the grid its candidates are chosen among."""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import field_error


class PolicySpec(BaseModel):
    """A threshold policy applied to every cell's scores; `grid` values are the candidates its parameters are
    chosen among (on all files for the oracle, on the other categories for the honest number)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["fixed", "rolling_quantile", "spot"]
    params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    def candidates(self) -> list[Any]:
        from harness.thresholds.policies import POLICIES

        keys = list(self.grid)
        return [POLICIES[self.type](**{**self.params, **dict(zip(keys, combo))})
                for combo in (itertools.product(*(self.grid[k] for k in keys)) if keys else [()])]

    @model_validator(mode="after")
    def _valid(self) -> "PolicySpec":
        for k, values in self.grid.items():
            if not values:
                raise ValueError(f"grid {k!r} needs at least one value")
        try:
            self.candidates()
        except ValidationError as exc:
            field, msg = field_error(exc)
            raise ValueError(f"{field}: {msg}") from None
        return self
