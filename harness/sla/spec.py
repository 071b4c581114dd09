"""A scenario's `sla:` section: the objectives a deployment promises, one set for every cell or one per target
(harness.sla.verdict judges the cells against them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator

class Objectives(BaseModel):
    """What a deployment promises. Every objective is optional; a cell is judged on those given."""

    model_config = ConfigDict(extra="forbid")

    p95_ms: float | None = Field(None, gt=0.0, description="p95 latency (ms) of every fixed-rate load run at the scenario's rates")
    min_events_per_s: float | None = Field(None, gt=0.0, description="events/s the service holds while keeping p95_ms and max_error_rate")
    max_error_rate: float | None = Field(None, ge=0.0, le=1.0, description="(errors + shed + dropped) / requests due, per run")
    max_recovery_s: float | None = Field(None, gt=0.0, description="seconds to recover from a replica kill (load.kill_replica_at_s)")
    min_nab_standard_cv: float | None = Field(None, description="cross-validated NAB standard score (nab_standard_cv)")
    max_quantized_loss_pct: float | None = Field(None, ge=0.0, description="% of NAB standard a reduced build may lose vs torch fp32")

    def given(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}

    def without_serving(self) -> "Objectives | None":
        """These objectives less those a load test measures: what a cell the scenario does not load-test
        (`load.cells`) is held to. None when nothing is left."""
        rest = self.model_copy(update=dict.fromkeys(SERVING_OBJECTIVES))
        return rest if rest.given() else None


SERVING_OBJECTIVES = ("p95_ms", "min_events_per_s", "max_error_rate", "max_recovery_s")  # measured by the load task


class SlaSpec(BaseModel):
    """A scenario's `sla:`: one set of objectives for every cell, or one per target (`sla: {edge: {p95_ms: 150}}`).
    Read with `parse` (the YAML writes it flat); `dump` writes it back that way."""

    common: Objectives | None = None
    per_target: dict[str, Objectives] = Field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> "SlaSpec":
        """Objectives, or target names mapped to objectives; errors name the key (`edge.p95_ms: ...`)."""
        from pydantic import ValidationError

        from harness.errors import field_error, kind_of

        if isinstance(data, SlaSpec):
            return data
        if not isinstance(data, dict) or not data:
            raise ValueError(f"expected objectives ({', '.join(Objectives.model_fields)}) or target names mapped to them, "
                             f"got {kind_of(data)}")
        objectives = set(Objectives.model_fields)
        strays = [k for k, v in data.items() if k not in objectives and not isinstance(v, dict)]
        if strays:
            raise ValueError(f"{strays[0]}: unknown objective (expected one of {', '.join(Objectives.model_fields)})")
        if set(data) & objectives and not set(data) <= objectives:
            raise ValueError("expected either objectives or target names mapped to objectives, not both")
        try:
            if set(data) <= objectives:
                return cls(common=Objectives.model_validate(data))
            return cls(per_target={str(name): Objectives.model_validate(o) for name, o in data.items()})
        except ValidationError as exc:
            field, msg = field_error(exc)
            where = "" if set(data) <= objectives else next(n for n, o in data.items() if _invalid(o)) + "."
            raise ValueError(f"{where}{field}: {msg}") from None

    def for_target(self, target: str | None) -> Objectives | None:
        return self.per_target.get(target, self.common) if target is not None else self.common

    def check_targets(self, targets: list[str]) -> None:
        """Per-target objectives must name the scenario's targets."""
        for name in self.per_target:
            if name not in targets:
                known = ", ".join(targets) if targets else "none: this scenario has no targets"
                raise ValueError(f"{name}: not a target of this scenario (targets: {known})")

    def dump(self) -> dict[str, Any]:
        """As written in a scenario file."""
        if self.common is not None:
            return self.common.given()
        return {name: o.given() for name, o in self.per_target.items()}


def _invalid(objectives: Any) -> bool:
    from pydantic import ValidationError

    try:
        Objectives.model_validate(objectives)
        return False
    except ValidationError:
        return True


SlaEntry = Annotated[SlaSpec, PlainValidator(SlaSpec.parse), PlainSerializer(SlaSpec.dump)]


