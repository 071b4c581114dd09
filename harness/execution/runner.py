"""The Ray runner: the only module that starts or joins Ray. It runs tasks (harness.tasks) in dependency order
and knows nothing of what they compute.

- No address: a private local Ray, listening on 127.0.0.1 only, started and stopped by the run. Inside a job
  started by `ray job submit`, the job's own cluster instead. `auto` or `host:port` joins that cluster.
- Each task is one Ray task, with the options its needs give (harness.execution.placement); it starts once the
  tasks it depends on are done, and receives their artefacts. A task that no node can take, or whose
  dependency failed, fails at once with the reason; a worker that dies fails its task, not the run. On a cluster
  with an autoscaler, a task whose target has no node yet is submitted all the same (its label selector is the
  autoscaler's demand) and waits up to HARNESS_TARGET_WAIT_S (TargetWait) before it fails with the reason.
- A kind marked ON_DRIVER (the load test, which deploys on Serve and starts its own actors) runs in the
  driver, when nothing else runs: its measurement must not share the machine with other cells.
- The runner yields each task's (record, artefacts) as it finishes, and reports progress as the tasks count
  their units (a scoring task: one per file), so a long cell shows movement.
- User detector packages (`py_modules`) and `HARNESS_CACHE` travel in the runtime environment the driver joins
  with, merged with a submitted job's own, so they reach the workers under `ray job submit` too.
- Joining a cluster whose token this client does not have is one line (exit 2) before anything is written. While
  a joined cluster runs tasks, its head is watched (`HeadWatch`): when it stops answering, the caller ends the
  run cleanly instead of Ray's driver hanging 60 s in its GCS calls, deaf to signals, then killing the process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from harness.execution.placement import Unplaceable, autoscaler_running, matching_nodes, node_facts, ray_options, wanted
from harness.results.schema import NodeFacts, Status, TaskRecord
from harness.tasks import RunContext, Task, execute, failed

POLL_S = 0.5  # how often progress is read while tasks run
HEAD_GRACE_S = 5.0  # a joined cluster's head that refuses connections this long is gone (HARNESS_HEAD_GRACE_S)
TARGET_WAIT_S = 300.0  # how long a task waits for the autoscaler to start a node of its target (HARNESS_TARGET_WAIT_S)

log = logging.getLogger(__name__)


def ray_environment(private: bool) -> str | None:
    """Ray reads these at import and in every process it starts. Explicit values avoid a stray
    ~/.ray/auth_token turning token auth on, and usage-stats calls to the outside. A private local Ray binds
    to 127.0.0.1 only (Ray then also skips its probe of an outside address to find the machine's IP), and always
    runs with token authentication and a fresh token (`private_token`): Serve's replicas open a gRPC port on every
    interface whatever the node's address, and that port unpickles what it is sent. Returns the token's folder
    (removed when the run ends) for a private Ray, else None."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # the runner fetches every task's outcome it owns (a failure is recorded in its cell); what it no longer
    # fetches is what a stopping run abandons, whose "Unhandled error" lines would bury the run's one line
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    if not private:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        return None
    folder = private_token()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's switch for a loopback-only node
    # Serve's fast path (uvloop, no per-request access logs, user code on the replica's own loop): measured
    # here 92k -> 129k events/s through the proxy (docs/serving.md). A cluster you join keeps its own setting.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # every Serve HTTP front reads bodies whole, bounded, before a replica sees them (harness.serving.http_guard)
    from harness.serving.http_guard import IMPORT_PATH

    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", IMPORT_PATH)
    return folder


def private_token() -> str:
    """Token authentication for a Ray this process starts: a fresh random token in a 0600 file of a 0700 folder
    (never on a command line, never in an environment variable), named by RAY_AUTH_TOKEN_PATH; every process Ray
    starts inherits the path. A token or mode already in the environment is replaced: a private cluster trusts
    no one else's. Returns the folder, which the caller removes when Ray has stopped."""
    import secrets
    import tempfile

    folder = tempfile.mkdtemp(prefix="harness-ray-auth-")  # mode 0700
    path = os.path.join(folder, "token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_TOKEN_PATH"] = path
    os.environ["RAY_AUTH_MODE"] = "token"
    return folder


def check_address(address: str | None) -> None:
    """A `host:port` that nothing answers on is bad input, said in one line at once (`ray.init` would retry for
    minutes first). `auto`, `ray://` and dashboard addresses are left to Ray."""
    if address is None or address == "auto" or "://" in address or ":" not in address:
        return
    import socket

    from harness.errors import InputError

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except ValueError:
        raise InputError(f"expected host:port or auto, got {address!r}", field="--address") from None
    except OSError as exc:
        raise InputError(f"no Ray cluster answers at {address} ({exc.strerror or exc})", field="--address") from None


def check_token(address: str, timeout_s: float = 5.0) -> None:
    """Ask the cluster's GCS at `address` (host:port) once whether it accepts this process's token: a refusal is
    one InputError line at once, where `ray.init` retries for 20 s and ends in two tracebacks. A GCS answers in
    milliseconds; anything else (no answer within `timeout_s`, e.g. a port that is not Ray's, whose client
    would wait 40 s; no such Ray API) is left to `ray.init`."""
    from harness.errors import InputError

    try:
        import ray.exceptions
        from ray._raylet import GcsClient  # what `ray start` itself probes the GCS with
    except ImportError:
        return
    answer: list[BaseException | None] = []

    def probe() -> None:
        try:
            GcsClient(address=address)
            answer.append(None)
        except BaseException as exc:  # noqa: BLE001 - judged below
            answer.append(exc)

    with _quiet_stderr():  # Ray's C++ client logs the refusal too: the line below says it once
        asking = threading.Thread(target=probe, name="harness-token-probe", daemon=True)
        asking.start()
        asking.join(timeout_s)
    if answer and isinstance(answer[0], ray.exceptions.AuthenticationError):
        raise InputError(_refused(address), field="--address") from None


def _refused(address: str) -> str:
    return (f"the Ray cluster at {address} refused this client's token: set RAY_AUTH_MODE=token and the cluster's "
            "token in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (a `harness cluster` topology: `harness cluster exec NAME "
            "-- ...`; a launcher cluster: ~/.ray/harness_token; KubeRay: the harness-ray-token secret)")


class _quiet_stderr:
    """File descriptor 2 sent to /dev/null for a moment (C++ logging writes there, past Python's sys.stderr)."""

    def __enter__(self) -> None:
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc: Any) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)


class HeadWatch:
    """Watches a joined cluster's head (its GCS port) from a thread. When the head dies, Ray's driver blocks in its
    GCS calls (signals unanswered) for `gcs_rpc_server_reconnect_timeout_s` (60 s), then Ray ends the process
    itself, so the run's manifest would stay `running` and nothing would say what to do. After `grace_s` of
    refused (or unanswered) connections, `on_lost(why)` is called in this thread: the caller records what it has
    and exits. A head back within the grace (GCS fault tolerance) leaves the run alone."""

    def __init__(self, address: str, on_lost: Callable[[str], None], grace_s: float | None = None):
        host, _, port = address.rpartition(":")
        self.where = (host.strip("[]"), int(port))
        self.address, self.on_lost = address, on_lost
        self.grace_s = grace_s if grace_s is not None else float(os.environ.get("HARNESS_HEAD_GRACE_S") or HEAD_GRACE_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="harness-head-watch", daemon=True)

    def start(self) -> "HeadWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def answers(self) -> bool:
        import socket

        try:
            socket.create_connection(self.where, timeout=1.0).close()
            return True
        except OSError:
            return False

    def _watch(self) -> None:
        since: float | None = None
        while not self._stop.wait(0.5):
            if self.answers():
                since = None
                continue
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= self.grace_s and not self._stop.is_set():
                self.on_lost(f"the Ray head at {self.address} is gone (its GCS refused connections for {self.grace_s:g} s)")
                return


def inside_ray_job() -> bool:
    """True in the driver of a job started by `ray job submit`."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


@dataclass
class Finished:
    task: Task
    record: TaskRecord
    artefacts: dict[str, Any]


def _entry(task: Task, context: RunContext, progress: Any, *dependencies: dict[str, Any]) -> tuple[TaskRecord, dict]:
    """What each Ray task runs: the plain-Python task, and where it ran."""
    record, artefacts = execute(task, context, dict(zip(task.after, dependencies)), progress)
    return record.model_copy(update={"node": NodeFacts(**node_facts())}), artefacts


class _Reporter:
    """The `progress` callable a task gets: forwards units to the driver's progress actor (fire and forget)."""

    def __init__(self, actor: Any, task_id: str):
        self.actor, self.task_id = actor, task_id

    def __call__(self, units: int) -> None:
        self.actor.add.remote(self.task_id, units)


class _ProgressTally:
    """The driver's actor that adds up the units each running task reports."""

    def __init__(self) -> None:
        self.units: dict[str, int] = {}

    def add(self, task_id: str, units: int) -> None:
        self.units[task_id] = self.units.get(task_id, 0) + units

    def snapshot(self) -> dict[str, int]:
        return dict(self.units)


@dataclass
class _Book:
    """The runner's bookkeeping between tasks: tasks not started, the artefacts (Ray refs) of tasks done ok, and
    the units done; `finish` is the one way a task ends, however it ended."""

    waiting: list[Task]
    outputs: dict[str, Any]  # task id -> its artefacts' ref, for the tasks after it
    on_progress: Callable[[float], None] | None
    done_units: float = 0.0

    def ready(self, task: Task) -> bool:
        return all(d in self.outputs for d in task.dependencies)

    def finish(self, task: Task, record: TaskRecord, artefacts: dict[str, Any], artefacts_ref: Any = None) -> Finished:
        """Count the task's units; an ok task's artefacts feed the tasks after it, a failed task's dependents are
        dropped (they never run); report progress; the Finished to yield."""
        self.done_units += task.units
        if record.status == Status.OK:
            self.outputs[task.id] = artefacts_ref
        else:
            self.waiting = self._drop_dependents(task, self.waiting)
        if self.on_progress is not None:
            self.on_progress(self.done_units)
        return Finished(task, record, artefacts)

    @staticmethod
    def _drop_dependents(task: Task, waiting: list[Task]) -> list[Task]:
        """Tasks that depend (transitively) on a failed one never run: their cell has failed already."""
        gone = {task.id}
        changed = True
        while changed:
            changed = False
            for t in waiting:
                if t.id not in gone and any(d in gone for d in t.dependencies):
                    gone.add(t.id)
                    changed = True
        return [t for t in waiting if t.id not in gone]


class RayRunner:
    def __init__(self, address: str | None = None, code: list[str] | None = None, metrics: Any = None):
        """`code`: folders of user detector packages, shipped to the workers (Ray `py_modules`); `metrics`: the
        run's harness.metrics.RunMetrics, which load tests report to while they run."""
        self.address = address if address is not None or not inside_ray_job() else "auto"
        self.code = sorted(set(code or []))
        self.metrics = metrics
        self._ray: Any = None
        self._token_folder: str | None = None
        self._watch: HeadWatch | None = None
        self._discovery: Any = None
        self._waits = TargetWait(0.0)

    def __enter__(self) -> "RayRunner":
        self._token_folder = ray_environment(private=self.private)
        import ray

        self._ray = ray
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        env = self.runtime_env()
        if env:
            kwargs["runtime_env"] = env
        handler = signal.getsignal(signal.SIGTERM)
        try:
            if self.private:
                started = ray.init(address="local", include_dashboard=False, **kwargs)
                from harness.execution.discovery import start_for_private_ray

                # Prometheus finds the node's metrics agent as it does on a cluster (what Ray's dashboard writes)
                self._discovery = start_for_private_ray(started.address_info["session_dir"])
            else:
                if os.environ.get("HARNESS_NODE_IP"):  # several nodes share this host (harness cluster exec): Ray
                    kwargs["_node_ip_address"] = os.environ["HARNESS_NODE_IP"]  # would join the head's, not this
                if self.address and "://" not in self.address and ":" in self.address:
                    check_token(self.address)
                self._join(kwargs)
        except BaseException:
            self._remove_token()
            raise
        signal.signal(signal.SIGTERM, handler)  # Ray's core installs a handler that dumps a stack and aborts
        return self

    def _join(self, kwargs: dict[str, Any]) -> None:
        """`ray.init` of the cluster at self.address; a refused token is one line (if the probe could not tell)."""
        try:
            self._ray.init(address=self.address, **kwargs)
        except ConnectionError as exc:
            if "InvalidAuthToken" in str(exc.__cause__ or ""):
                from harness.errors import InputError

                raise InputError(_refused(self.address or "auto"), field="--address") from None
            raise

    def watch_head(self, on_lost: Callable[[str], None]) -> HeadWatch | None:
        """Call `on_lost(why)` (from a thread) if the joined cluster's head goes away while this runner is open,
        until the watch returned is stopped; nothing (None) for a private Ray, which ends with this process."""
        if self.private or self._ray is None:
            return None
        address = self._ray.get_runtime_context().gcs_address
        self._watch = HeadWatch(address, on_lost).start()
        return self._watch

    def __exit__(self, *exc) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._discovery is not None:
            self._discovery.stop()
        if self._ray is not None:
            self._ray.shutdown()
        self._remove_token()

    def _remove_token(self) -> None:
        if self._token_folder is not None:
            import shutil

            shutil.rmtree(self._token_folder, ignore_errors=True)
            self._token_folder = None

    @property
    def private(self) -> bool:
        """Whether this runner started its own Ray (which ends with it)."""
        return self.address is None

    def runtime_env(self) -> dict[str, Any]:
        """What the workers need from the driver: the user's detector packages and the model cache. Inside a
        submitted job Ray merges it with the job's runtime env and refuses a field both set, so what the job
        already sets is left to the job (its py_modules are extended, not replaced)."""
        job: dict[str, Any] = {}
        if inside_ray_job():
            from ray.job_config import JobConfig

            job = dict(JobConfig.from_json(json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"])).runtime_env or {})
        env: dict[str, Any] = {}
        if self.code:
            if job.get("py_modules"):
                os.environ["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"  # ours is the job's list plus our folders
                env["py_modules"] = [*job["py_modules"], *self.code]
            else:
                env["py_modules"] = self.code
        cache = os.environ.get("HARNESS_CACHE")
        if cache and "HARNESS_CACHE" not in (job.get("env_vars") or {}):  # workers keep models where the driver does
            env["env_vars"] = {"HARNESS_CACHE": cache}
        return env

    def describe(self) -> dict[str, Any]:
        ray = self._ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return {
            "address": self.address or "local",
            "ray_version": ray.__version__,
            "cluster_resources": ray.cluster_resources(),
            "nodes": len(nodes),
            "node_list": [
                {"node_id": n["NodeID"], "labels": n.get("Labels", {}), "resources": n.get("Resources", {})} for n in nodes
            ],
            "job_id": ray.get_runtime_context().get_job_id(),
        }

    def run(
        self,
        tasks: list[Task],
        context: RunContext,
        finished: dict[str, dict[str, Any]] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> Iterator[Finished]:
        """Run `tasks` in dependency order; yield each as it finishes. `finished`: artefacts of tasks done in an
        earlier run that some of `tasks` depend on. `on_progress(units)` is called with the units done so far."""
        ray = self._ray
        nodes = ray.nodes()
        remote = ray.remote(max_retries=0, num_returns=2)(_entry)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # beside the driver: on a node that may leave mid-run (an edge node), the progress would die with it
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        actor = ray.remote(num_cpus=0)(_ProgressTally).options(scheduling_strategy=here).remote()
        context_ref = ray.put(context)
        book = _Book(list(tasks), {tid: ray.put(artefacts) for tid, artefacts in (finished or {}).items()}, on_progress)
        running: dict[Any, tuple[Task, Any]] = {}  # record ref -> (task, artefacts ref)
        waits = self._waits = TargetWait(self.target_wait_limit(tasks))

        while book.waiting or running:
            for task in [t for t in book.waiting if book.ready(t) and not _on_driver(t)]:  # a driver's: below, alone
                book.waiting.remove(task)
                try:
                    options = ray_options(task.needs, nodes, may_scale=waits.limit_s > 0)
                except Unplaceable as exc:
                    yield book.finish(task, failed(task.kind, _unplaceable(task, exc)), {})
                    continue
                refs = remote.options(**options).remote(
                    task, context_ref, _Reporter(actor, task.id), *(book.outputs[d] for d in task.dependencies)
                )
                running[refs[0]] = (task, refs[1])
                waits.check(refs[0], task, nodes)
            if not running:
                done = self._next_on_driver(book, context)
                if done is None:
                    break  # what is left waits on tasks that failed
                yield done
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            if not ready:
                latest = ray.nodes()
                if _lost_nodes(nodes, latest) and not waits.limit_s:  # with an autoscaler: TargetWait's to judge
                    yield from self._cancel_stranded(book, running, latest)
                yield from self._cancel_expired(book, running, latest)
                nodes = latest
                if on_progress is not None:
                    partial = ray.get(actor.snapshot.remote())
                    on_progress(book.done_units + sum(min(partial.get(t.id, 0), t.units) for t, _ in running.values()))
                continue
            task, artefacts_ref = running.pop(ready[0])
            try:
                record = ray.get(ready[0])
                artefacts = ray.get(artefacts_ref) if record.status == Status.OK else {}
            except Exception as exc:  # noqa: BLE001 - a dead worker fails its task, not the run
                record, artefacts = failed(task.kind, _ray_error(exc)), {}
            yield book.finish(task, record, artefacts, artefacts_ref)

    def _next_on_driver(self, book: _Book, context: RunContext) -> Finished | None:
        """The next ready task of a kind that runs in the driver (nothing else runs now); None when none is ready."""
        ready_here = [t for t in book.waiting if _on_driver(t) and book.ready(t)]
        if not ready_here:
            return None
        task = ready_here[0]
        book.waiting.remove(task)
        try:
            ray_options(task.needs, self._await_target(task.needs))  # its target must have a node
            record, artefacts = self._run_on_driver(task, context, [book.outputs[d] for d in task.dependencies])
        except Unplaceable as exc:
            record, artefacts = failed(task.kind, _unplaceable(task, exc)), {}
        return book.finish(task, record, artefacts, self._ray.put(artefacts) if record.status == Status.OK else None)

    def target_wait_limit(self, tasks: list[Task]) -> float:
        """Seconds a task may wait for a node of its target to come up: 0 (fail at once) on a cluster without an
        autoscaler, which never gets a node it has not got; else HARNESS_TARGET_WAIT_S (default TARGET_WAIT_S)."""
        text = os.environ.get("HARNESS_TARGET_WAIT_S", "").strip()
        try:
            limit = float(text) if text else TARGET_WAIT_S
        except ValueError:
            limit = -1.0
        if not limit >= 0:  # also NaN
            from harness.errors import InputError

            raise InputError(f"expected seconds (0 or more), got {text!r}", field="HARNESS_TARGET_WAIT_S")
        if self.private or not limit or not any(t.needs.labels for t in tasks):
            return 0.0
        return limit if autoscaler_running(self._ray.get_runtime_context().gcs_address) else 0.0

    def _await_target(self, needs: Any) -> list[dict[str, Any]]:
        """The cluster's nodes, once one has the labels of `needs` (a task run in the driver, a load test, asks
        for its target's node with a placeholder task: the demand the autoscaler acts on), or the wait is over."""
        nodes = self._ray.nodes()
        limit = self._waits.limit_s
        if not limit or not needs.labels or matching_nodes(needs, nodes):
            return nodes
        ray, started = self._ray, time.monotonic()
        probe = ray.remote(max_retries=0)(_here).options(**ray_options(needs, nodes, may_scale=True)).remote()
        ready, _ = ray.wait([probe], timeout=limit)
        if not ready:
            ray.cancel(probe, force=True)
            raise Unplaceable(self._waits.reason(needs))
        log.warning("target %s: a node came up %.1f s after a task asked for one", wanted(needs), time.monotonic() - started)
        return ray.nodes()

    def _cancel_expired(self, book: _Book, running: dict[Any, tuple[Task, Any]],
                        nodes: list[dict[str, Any]]) -> Iterator[Finished]:
        """Tasks that waited their whole limit for a node of their target, in vain: cancelled, failed with why."""
        for ref, (task, _) in list(running.items()):
            if self._waits.check(ref, task, nodes):
                self._ray.cancel(ref, force=True)
                del running[ref]
                yield book.finish(task, failed(task.kind, _unplaceable(task, Unplaceable(self._waits.reason(task.needs)))), {})

    def _cancel_stranded(self, book: _Book, running: dict[Any, tuple[Task, Any]],
                         nodes: list[dict[str, Any]]) -> Iterator[Finished]:
        """After a node was lost: tasks on it fail by themselves (their worker is gone); tasks still queued for a
        target that has no node left would wait forever: they are cancelled, and fail with why (so is a task of
        that target whose NodeDiedError Ray has not delivered yet)."""
        for ref, (task, _) in list(running.items()):
            reason = _stranded(task, nodes)
            if reason:
                self._ray.cancel(ref, force=True)
                del running[ref]
                yield book.finish(task, failed(task.kind, reason), {})

    def _run_on_driver(self, task: Task, context: RunContext, dependency_refs: list[Any]) -> tuple[TaskRecord, dict]:
        """A kind that drives the cluster itself (a load test) runs here, in the driver, with nothing else running."""
        from harness.execution.serving_cluster import RayServing

        inputs = dict(zip(task.after, self._ray.get(dependency_refs)))
        record, artefacts = execute(task, context, inputs, None, cluster=RayServing(self.metrics))
        return record.model_copy(update={"node": NodeFacts(**node_facts())}), artefacts


class TargetWait:
    """Tasks submitted for a target that has no node yet, while the autoscaler starts one: each may wait
    `limit_s` from when it was seen waiting. Logs how long a target's first asking task waited for its node."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self._since: dict[Any, float] = {}  # record ref -> when it was first seen with no node for it
        self._asked: dict[str, float] = {}  # the labels wanted -> when a task first asked for them in vain

    def check(self, ref: Any, task: Task, nodes: list[dict[str, Any]]) -> bool:
        """Note whether `task` (submitted as `ref`) has a node on `nodes`; True once it waited past the limit."""
        if not self.limit_s or not task.needs.labels:
            return False
        key, now = wanted(task.needs), time.monotonic()
        if matching_nodes(task.needs, nodes):
            self._since.pop(ref, None)
            if key in self._asked:
                log.warning("target %s: a node came up %.1f s after a task asked for one", key, now - self._asked.pop(key))
            return False
        self._asked.setdefault(key, now)
        return now - self._since.setdefault(ref, now) >= self.limit_s

    def reason(self, needs: Any) -> str:
        return (f"no node with the labels {wanted(needs)} came up within {self.limit_s:g} s (HARNESS_TARGET_WAIT_S): "
                "the autoscaler was asked for one; does a node type have these labels and room under its max_workers?")


def _here() -> str:
    """A placeholder task: it runs once a node of its target is up."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _unplaceable(task: Task, exc: Unplaceable) -> str:
    return f"target {task.cell.target}: {exc}" if task.cell.target else str(exc)


def _stranded(task: Task, nodes: list[dict[str, Any]]) -> str | None:
    """Why `task` can no longer run on the cluster's `nodes` (its target lost its last node), or None."""
    try:
        ray_options(task.needs, nodes)
        return None
    except Unplaceable as exc:
        return f"a node left the cluster, and now {_unplaceable(task, exc)}"


def _lost_nodes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> bool:
    """Whether a node alive in `before` is dead or gone in `after`."""
    alive = {n["NodeID"] for n in after if n.get("Alive")}
    return any(n.get("Alive") and n["NodeID"] not in alive for n in before)


def _on_driver(task: Task) -> bool:
    from harness.tasks import KINDS

    return bool(getattr(KINDS[task.kind], "ON_DRIVER", False))


def _ray_error(exc: Exception) -> str:
    """One line for a task Ray could not finish (a dead worker or node, a runtime env that failed to set up...):
    its first line, without the advice that follows its first sentences."""
    text = f"{type(exc).__name__}: {exc}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else type(exc).__name__
    kept = ""
    for sentence in line.split(". "):
        kept = f"{kept}. {sentence}" if kept else sentence
        if len(kept) >= 160:
            break
    return kept if kept.endswith(".") or kept == line else kept + "."
