"""Load settings, defined once: `RunShape` (what every run of load shares: request size, window, warm-up, in-flight
bound, timeout, VALID rules), `LoadSettings` (one run: a rate or a concurrency) and `LoadSpec` (a scenario's
`load:` section: the rates, paths and peak search of every variant's load test). `harness load`'s flags take
their defaults and help from these fields (harness.load.command), so the three never disagree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.load.validity import ValidityRules


class RunShape(BaseModel):
    """What every load run has, whoever starts it (a scenario, `harness load`, a test)."""

    model_config = ConfigDict(extra="forbid")

    events_per_request: int = Field(1000, ge=1, description="events each request carries")
    arrivals: Literal["constant", "poisson"] = Field("constant", description="open loop: arrival process")
    think_time_s: float = Field(0.0, ge=0.0, description="closed loop: pause between a client's requests")
    duration_s: float = Field(30.0, gt=0.0, description="seconds of the measured window")
    warmup_s: float = Field(5.0, ge=0.0, description="seconds of load before the measured window (not recorded)")
    max_in_flight: int = Field(256, ge=1, description="open loop: outstanding requests before new ones are dropped")
    timeout_s: float = Field(10.0, gt=0.0, description="seconds per request")
    rules: ValidityRules = Field(default_factory=ValidityRules)


class LoadSettings(RunShape):
    """One load run. `mode` may be left out: a `rate` means open loop, a `concurrency` closed loop."""

    mode: Literal["open", "closed"] | None = None
    rate: float | None = Field(None, gt=0, description="requests per second offered (open loop)")
    concurrency: int | None = Field(None, ge=1, description="virtual clients (closed loop)")
    max_lateness_s: float = Field(0.1, gt=0, description="open loop: generator lag beyond which requests are dropped")
    drain_s: float = Field(10.0, ge=0, description="wait for outstanding requests after the window")
    seed: int = 0

    @model_validator(mode="after")
    def _one_mode(self) -> "LoadSettings":
        if self.mode is None:
            if (self.rate is None) == (self.concurrency is None):
                raise ValueError("give either rate (open loop) or concurrency (closed loop)")
            self.mode = "open" if self.rate is not None else "closed"
        if self.mode == "open" and self.rate is None:
            raise ValueError("open loop needs a rate")
        if self.mode == "closed" and self.concurrency is None:
            raise ValueError("closed loop needs a concurrency")
        return self

    @property
    def connections(self) -> int:
        """The most requests this run can have in flight: the HTTP connection pool's size."""
        return self.max_in_flight if self.mode == "open" else self.concurrency  # type: ignore[return-value]


class LoadSpec(RunShape):
    """A scenario's load test of every variant on Ray Serve (docs/load.md). Each variant is deployed once, its
    streams warmed (trained) outside the measured window, then loaded at each rate (open loop) or concurrency
    (closed loop), on each path, and optionally searched for its peak rate at the SLO."""

    paths: list[Literal["http", "handle"]] = Field(["http", "handle"], min_length=1,
                                                   description="http: through Serve's proxy; handle: a DeploymentHandle inside the cluster")
    mode: Literal["open", "closed"] = "open"
    rates: list[float] = Field(default_factory=list, description="open loop: requests/s, one measured run each")
    concurrency: list[int] = Field(default_factory=list, description="closed loop: virtual clients, one run each")
    encoding: Literal["json", "msgpack"] = Field("json", description="request and answer encoding")
    streams: int = Field(8, ge=1, description="streams replayed: the corpus's first N files (harness load "
                         "without --corpus: N synthetic streams)")
    slo_p95_ms: float = Field(100.0, gt=0.0, description="the p95 latency a peak rate must keep to")
    find_peak: bool = Field(False, description="search the highest rate whose p95 meets the SLO, VALID")
    peak_start_rps: float = Field(20.0, gt=0.0)
    peak_max_runs: int = Field(8, ge=2, le=30)
    peak_precision: float = Field(0.05, gt=0.0, lt=1.0, description="relative width at which the search stops")
    peak_duration_s: float | None = Field(None, gt=0.0, description="measured window of each probe (default duration_s)")
    generators: int = Field(1, ge=1, le=16, description="load generator actors (their histograms are merged)")
    profile: bool = Field(False, description="py-spy flame graphs of every replica and the proxy during the first run")
    kill_replica_at_s: float | None = Field(None, ge=0.0, description="fault: kill shard 0's replica this many "
                                            "seconds into the first run's measured window")
    cells: list[str] = Field(default_factory=list, description="the cells load-tested, by id or shell pattern "
                             "(`*int8*`); none: every cell. Each load test deploys, warms and loads its variant alone, "
                             "so a scenario that scores many variants may serve only those it would ship")

    def load_tests(self, cell_id: str) -> bool:
        """Whether the cell `cell_id` is load-tested (`cells`)."""
        from fnmatch import fnmatchcase

        return not self.cells or any(fnmatchcase(cell_id, pattern) for pattern in self.cells)

    @model_validator(mode="after")
    def _something_to_run(self) -> "LoadSpec":
        if self.mode == "open" and not self.rates and not self.find_peak:
            raise ValueError("open loop needs 'rates' or 'find_peak: true'")
        if self.mode == "closed" and not self.concurrency:
            raise ValueError("closed loop needs 'concurrency'")
        if self.find_peak and self.mode != "open":
            raise ValueError("find_peak searches rates: it needs mode 'open'")
        probe_s = self.peak_duration_s or self.duration_s
        if self.find_peak and probe_s < self.rules.min_duration_s:
            raise ValueError(f"every peak probe would be INVALID: its {probe_s:g} s window is under "
                             f"rules.min_duration_s ({self.rules.min_duration_s:g} s); lower the rule or lengthen the probe")
        return self

    def points(self) -> list[float]:
        """The run of each measured point: its rate (open loop) or its clients (closed loop)."""
        return list(self.rates) if self.mode == "open" else [float(c) for c in self.concurrency]

    def run_settings(self, point: float, duration_s: float | None = None) -> LoadSettings:
        """The settings of one run at `point` (a rate or a client count), over `duration_s` (default the spec's)."""
        shape = self.model_dump(include=set(RunShape.model_fields))
        shape["duration_s"] = duration_s or self.duration_s
        if self.mode == "open":
            return LoadSettings(mode="open", rate=point, **shape)
        return LoadSettings(mode="closed", concurrency=int(point), **shape)
