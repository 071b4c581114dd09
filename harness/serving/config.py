"""What a served variant is, and how events find their shard (plain Python; harness.serving.app builds the Ray
Serve application from a `ServiceConfig`, docs/serving.md).

One stream's state must live in exactly one place, and Serve routes a deployment's requests to any of its
replicas. So the state lives in `shards`: separate deployments of one replica each, a stream always on shard
`crc32(stream id) % shards`; a stateless ingress (as many replicas as you like) decodes requests, splits their
events by shard, and puts the answers back in order. With one shard and one ingress replica the ingress holds
the streams itself: a single deployment, one hop (and its serialisation) less.
"""

from __future__ import annotations

import zlib
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.backends import BackendSpec
from harness.detectors.pruning import PruningSpec

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from harness.serving.streams import StreamTable


class ServeSpec(BaseModel):
    """A scenario's `serve:` section: the deployment's shape and Ray Serve's throughput settings."""

    model_config = ConfigDict(extra="forbid")

    shards: int = Field(1, ge=1, le=64, description="stream shards (one replica each): the stateful replicas")
    ingress_replicas: int = Field(1, ge=1, le=64, description="replicas of the stateless HTTP ingress")
    max_ongoing_requests: int = Field(32, ge=1, description="Serve's per-replica concurrency cap (ingress and shards)")
    max_batch_size: int = Field(16, ge=1, description="@serve.batch: requests a shard scores together")
    batch_wait_timeout_s: float = Field(0.002, ge=0.0, le=1.0, description="@serve.batch: wait for a fuller batch")
    probation: int = Field(750, ge=0, description="probationary records of a new stream that gives neither "
                           "probation nor length (with a length: the scenario's probation_percent of it)")
    max_streams: int | None = Field(None, ge=1, description="streams one shard keeps, more are refused (429); "
                                    "default 100,000, or 1,000 for a learned detector (a model per stream, 0.8 to 9 "
                                    "MB each: docs/serving.md)")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port of Serve's proxy")
    host: str = Field("127.0.0.1", description="address the proxy listens on: loopback unless you ask")
    cpus_per_shard: float = Field(0.5, gt=0.0, description="Ray CPUs each shard replica reserves")
    cpus_per_ingress: float = Field(0.25, gt=0.0, description="Ray CPUs each ingress replica reserves")
    token_file: str | None = Field(None, description="a file holding the API token every request must carry "
                                   "(Authorization: Bearer <token>); relative to the scenario file")
    no_auth: bool = Field(False, description="serve beyond loopback without a token, knowingly")
    max_events_per_request: int = Field(10_000, ge=1, description="events one request may carry (413 beyond): "
                                        "bounds what one request costs the others")
    max_streams_per_request: int = Field(128, ge=1, description="distinct streams one request may touch (413 "
                                         "beyond): each costs a detector call, a new one its set-up")
    max_probation: int = Field(10_000, ge=0, description="the longest probation a stream may ask for (400 "
                               "beyond): a learned detector keeps every probationary record until it trains")
    stream_ttl_s: float | None = Field(86_400.0, gt=0.0, description="a stream not sent an event for this long is "
                                       "forgotten (its next event starts it again, warming); null: never")
    max_queued_requests: int = Field(32, ge=0, description="requests that wait at the HTTP front for one of the "
                                     "ingress's max_ongoing_requests slots; more are shed: 503 + Retry-After")
    retry_after_s: float = Field(1.0, ge=0.0, description="the Retry-After a shed request is answered with")

    @model_validator(mode="after")
    def _exposed_needs_a_token(self) -> "ServeSpec":
        if not is_loopback(self.host) and self.token_file is None and not self.no_auth:
            raise ValueError(f"host {self.host} exposes the service beyond this machine: give a token file "
                             "(serve.token_file, --token-file) or, knowingly, no_auth (--no-auth)")
        return self

    @property
    def single(self) -> bool:
        """One shard and one ingress replica: a single deployment that holds the streams itself (one hop less)."""
        return self.shards == 1 and self.ingress_replicas == 1

    @property
    def cpus(self) -> float:
        """Ray CPUs the whole deployment reserves."""
        if self.single:
            return self.cpus_per_shard
        return self.shards * self.cpus_per_shard + self.ingress_replicas * self.cpus_per_ingress

    @property
    def admitted(self) -> int:
        """Requests the HTTP front lets through at once, per proxy: the ingress replicas' slots, so none waits in
        Serve's router (whose retries under backoff collapsed an overloaded service to 3% of its peak)."""
        return self.max_ongoing_requests * (1 if self.single else self.ingress_replicas)

    def owner(self, shard: int) -> str:
        """The deployment that holds shard `shard`'s streams."""
        return "ScoreIngress" if self.single else f"StreamShard-{shard}"


class Variant(BaseModel):
    """The detector a service runs: a cell's type, parameters, backend and pruning."""

    model_config = ConfigDict(extra="forbid")

    id: str = "variant"
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    backend: BackendSpec | None = None
    pruning: PruningSpec | None = None

    def detector_factory(self) -> Callable[[], Any]:
        """A function returning a fresh detector for one stream (harness.detectors.build_detector)."""
        from harness.detectors import build_detector

        return partial(build_detector, self.type, self.params, self.backend, self.pruning)


class ServiceConfig(BaseModel):
    """Everything harness.serving.app needs: the variant, the deployment's settings, NAB's probation percentage."""

    model_config = ConfigDict(extra="forbid")

    variant: Variant
    serve: ServeSpec = Field(default_factory=ServeSpec)
    probation_percent: float = Field(0.15, ge=0.0, lt=1.0)
    labels: dict[str, str] = Field(default_factory=dict, description="node labels every replica's node has (its "
                                   "target's); none: wherever Ray puts them")
    target: str = Field("local", description="the scenario target the service runs on (`local`: none), the `target` "
                        "label of its metrics (harness.serving.metrics)")
    api_token: str | None = Field(None, repr=False, description="the token of serve.token_file (read by the "
                                  "driver, so the replicas need not see the file)")

    def stream_limit(self) -> int:
        """Streams a shard keeps: `serve.max_streams`, else by what one stream costs (docs/serving.md)."""
        if self.serve.max_streams is not None:
            return self.serve.max_streams
        from harness.detectors import resolve_detector

        return LEARNED_STREAMS if resolve_detector(self.variant.type).trains_at_probation else STREAMS

    def stream_table(self, executor: "Executor | None" = None) -> "StreamTable":
        """The live streams of one shard of this service: its variant's detectors, its probation, limits and
        expiry; learned streams trained on `executor` (None: in the caller's thread)."""
        from harness.serving.streams import StreamTable

        s = self.serve
        return StreamTable(self.variant.detector_factory(), s.probation, self.probation_percent, self.stream_limit(),
                           s.max_probation, s.stream_ttl_s, executor=executor)

    def user_code(self) -> list[str]:
        """The folder of a user's detector package, which the replicas need (shipped as Ray py_modules)."""
        from harness.detectors import user_code_path

        folder = user_code_path(self.variant.type)
        return [str(folder)] if folder else []


STREAMS, LEARNED_STREAMS = 100_000, 1_000  # default streams per shard: 8.6 KB each for windowedGaussian; a learned
# stream holds its own model, 0.8 MB (autoencoder) to 9 MB (ensemble) measured by benchmarks/bench_stream_memory.py


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def shard_of(stream: str, shards: int) -> int:
    """The shard that owns a stream: stable across processes and restarts (crc32, not Python's hash)."""
    return zlib.crc32(stream.encode()) % shards
