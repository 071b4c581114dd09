"""The load task's orchestration in plain Python, through its `ServingCluster` protocol: what it deploys, how it
warms streams, that the deployment is always taken down, and how a failure and a fault are recorded. (Real
Serve and real load: tests/test_load_serve.py.)"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import numpy as np

from harness.serving.config import ServeSpec
from harness.timing import TimingSpec
from harness.serving.api import Answer, decode, encode_answer
from harness.load import LoadOutcome, Recorder
from harness.load.payload import START_TIME
from harness.scoring.nab import probation_rows
from harness.plan import plan
from harness.load.settings import LoadSpec
from harness.tasks import RunContext, execute, plan_tasks
from harness.tasks.load import _fault

from conftest import REPO


@dataclass
class Deployed:
    url: str = "http://127.0.0.1:1/v1/score"
    deploy_s: float = 0.5


@dataclass
class FakeCluster:
    """Answers every request with 200 and records what the task asked for, listing each stream in `warming` as a
    service does: until it has been sent its probation (15% of its length) and one event more. `fail_load` makes
    load runs raise; `fail_post`: every post is answered with that status."""

    fail_load: bool = False
    fail_post: int | None = None
    calls: list = field(default_factory=list)
    posted: list = field(default_factory=list)
    headers: list = field(default_factory=list)
    loaded: list = field(default_factory=list)
    seen: dict = field(default_factory=dict)

    def deploy(self, config, name):
        self.calls.append(("deploy", name, config.serve.shards))
        return Deployed()

    def undeploy(self, name):
        self.calls.append(("undeploy", name))

    def post(self, service, body, content_type, headers=None):
        batch = decode(body, content_type)
        self.posted.append(batch)
        self.headers.append(headers)
        if self.fail_post:
            return self.fail_post, b'{"error": "scoring failed"}', "application/json"
        warming = {}
        for k, s in enumerate(batch.streams):
            self.seen[s] = self.seen.get(s, 0) + int((batch.index == k).sum())
            need = probation_rows(batch.settings[s]["length"], 0.15) + 1 - self.seen[s]
            if need > 0:
                warming[s] = need
        return 200, encode_answer(Answer(np.zeros(len(batch)), warming), content_type), content_type

    def replicas(self, service):
        return [{"deployment": "ScoreIngress", "pid": 1, "node_id": "n"}]

    def serve_environment(self):
        return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}

    def beside(self, config, fn, *args):
        self.calls.append(("beside", config.labels))
        return fn(*args)

    def load(self, service, path, settings, bodies, profile=None, kill=None):
        self.calls.append(("load", path, settings.rate, len(bodies)))
        self.loaded.append(bodies)
        if self.fail_load:
            raise RuntimeError("generator lost")
        rec = Recorder(window_s=settings.duration_s)
        for i in range(int(settings.rate * settings.duration_s)):
            rec.record(0.01, i / settings.rate, settings.events_per_request)
        outcome = LoadOutcome("open", rec, arrivals="constant", offered_rps=settings.rate,
                              scheduled=int(settings.rate * settings.duration_s), events_per_request=settings.events_per_request)
        return outcome, {}, None


def context(load: dict) -> tuple:
    p = plan(REPO / "scenarios" / "baselines.yaml")
    cell = next(c for c in p.cells if c.id == "windowedGaussian.window-288")
    spec = LoadSpec.model_validate(load)
    ctx = RunContext(p.corpus, p.profiles, None, 0.15, serve=ServeSpec(shards=1), load=spec)
    (task,) = [t for t in plan_tasks([cell], TimingSpec(), len(p.corpus.files), load=True) if t.kind == "load"]
    return task, ctx


def test_a_load_task_warms_every_stream_then_loads_each_path_and_undeploys() -> None:
    task, ctx = context({"paths": ["http", "handle"], "rates": [30], "streams": 3, "events_per_request": 500,
                         "duration_s": 2, "warmup_s": 0, "rules": {"min_duration_s": 1, "min_requests": 10}})
    cluster = FakeCluster()
    record, artefacts = execute(task, ctx, {}, None, cluster=cluster)
    assert record.status.value == "ok", record.error
    assert cluster.calls[0] == ("deploy", "load-windowedGaussian-window-288", 1)
    assert [c[0] for c in cluster.calls[-2:]] == ["undeploy", "beside"]  # the in-process ceiling once the service is gone
    assert cluster.calls[-2] == ("undeploy", "load-windowedGaussian-window-288")
    assert [c[1] for c in cluster.calls if c[0] == "load"] == ["http", "handle"]
    # warm-up: each of the 3 streams is sent requests of 500 events, in order, until the service no longer lists
    # it as warming (its probation, 15% of 4032 = 604, and one event more: 605), every request with its settings
    streams = [b.streams[0] for b in cluster.posted]
    assert streams == sorted(streams, key=streams.index) and len(set(streams)) == 3
    per_stream = {s: sum(len(b) for b in cluster.posted if b.streams[0] == s) for s in set(streams)}
    assert set(per_stream.values()) == {1000} and len(cluster.posted) == 6
    settings = {"length": 4032, "order": "arrival"}
    assert all(b.settings == {b.streams[0]: settings} for b in cluster.posted)
    assert all(h == {} for h in cluster.headers)  # no API token yet
    # the measured bodies continue each stream after its 1000 warm-up events, with the same settings
    for bodies in cluster.loaded:
        batches = [decode(*b) for b in bodies[0]]
        assert {b.streams[0] for b in batches} == set(streams)
        for name in streams:
            first = next(b for b in batches if b.streams == [name])
            assert first.timestamp[0] == START_TIME + 300.0 * 1000 and first.settings == {name: settings}
    result = record.result
    assert result.warmup.streams == 3 and result.warmup.events == 3 * 1000
    assert result.inprocess_eps > 0 and result.serve_environment == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    assert [p.summary.valid for p in result.points] == [True, True]


def test_the_scenarios_api_token_reaches_the_service_and_every_warm_up_request(tmp_path) -> None:
    token = "t0ken-" + "x" * 26
    (tmp_path / "token").write_text(token + "\n")
    task, ctx = context({"rates": [30], "streams": 2, "events_per_request": 500, "duration_s": 1, "warmup_s": 0,
                         "rules": {"min_duration_s": 1, "min_requests": 10}})
    ctx.serve = {"shards": 1, "token_file": str(tmp_path / "token")}
    deployed = []
    cluster = FakeCluster()
    cluster.deploy = lambda config, name: deployed.append(config) or Deployed()
    record, _ = execute(task, ctx, {}, None, cluster=cluster)
    assert record.status.value == "ok", record.error
    assert deployed[0].api_token == token and "x" * 26 not in repr(deployed[0])  # the replicas get it; repr hides it
    assert cluster.headers and all(h == {"Authorization": f"Bearer {token}"} for h in cluster.headers)
    assert token not in str(record.result.model_dump())  # recorded settings name the file, never the token


def test_a_failed_load_is_recorded_and_the_deployment_still_goes() -> None:
    task, ctx = context({"rates": [30], "streams": 1, "duration_s": 1, "warmup_s": 0})
    cluster = FakeCluster(fail_load=True)
    record, artefacts = execute(task, ctx, {}, None, cluster=cluster)
    assert record.status.value == "failed" and "generator lost" in record.error
    assert cluster.calls[-1][0] == "undeploy" and artefacts == {}


def test_a_failed_warm_up_fails_the_task_before_any_load() -> None:
    task, ctx = context({"rates": [30], "streams": 2, "duration_s": 1, "warmup_s": 0})
    cluster = FakeCluster(fail_post=503)
    record, artefacts = execute(task, ctx, {}, None, cluster=cluster)
    assert record.status.value == "failed"
    assert "warm-up of stream synthNoAnomaly/periodic_noise.csv failed: HTTP 503: " in record.error, record.error
    assert not [c for c in cluster.calls if c[0] == "load"] and cluster.calls[-1][0] == "undeploy"
    assert len(cluster.posted) == 1  # the first answer ends it


@pytest.mark.parametrize("seconds,expected,recovered", [
    ([(1, 0, 10.0), (2, 0, 900.0), (3, 2, 10.0), (4, 0, 10.0)], 2.0, True),
    ([(1, 0, 10.0)], 0.0, True),
    ([(1, 0, 10.0), (2, 0, 900.0), (3, 2, 10.0)], 2.0, False),  # still failing in the run's last second: a lower bound
])
def test_fault_recovery_runs_to_the_last_bad_second(seconds, expected, recovered) -> None:
    from harness.load import LoadSummary, SecondStats
    from harness.load.summary import LatencyMs

    s = LoadSummary(mode="open", events_per_request=1, duration_s=5, requests=1, events=1, achieved_rps=1, achieved_eps=1,
                    latency_ms=LatencyMs(), errors=2, dropped=0,
                    per_second=[SecondStats(t=t, rps=1, eps=1, errors=e, p95_ms=p) for t, e, p in seconds])
    fault = _fault(s, {"deployment": "StreamShard-0"}, 2.0, 123.0, slo_p95_ms=100)
    assert fault.recovery_s == expected and fault.killed and fault.replica == "StreamShard-0"
    assert fault.recovered is recovered


def test_fault_recovery_counts_seconds_that_shed() -> None:
    from harness.load import LoadSummary, SecondStats
    from harness.load.summary import LatencyMs

    s = LoadSummary(mode="open", events_per_request=1, duration_s=6, requests=1, events=1, achieved_rps=1, achieved_eps=1,
                    latency_ms=LatencyMs(), errors=0, dropped=0, shed=3,
                    per_second=[SecondStats(t=t, rps=1, eps=1, shed=n, p95_ms=10.0) for t, n in ((2, 1), (4, 2), (5, 0))])
    assert _fault(s, {"deployment": "StreamShard-0"}, 2.0, 123.0, slo_p95_ms=100).recovery_s == 3.0
