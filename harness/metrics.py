"""Prometheus metrics of a run, beside Ray's and Serve's own: cells planned and finished, while a load cell runs its
achieved rate, latency percentiles, errors and shed requests second by second, and each cell's SLA verdicts
(clusters/monitoring/ scrapes and charts them; docs/targets.md#metrics lists them).

`harness run --metrics-port 9464` serves them at http://127.0.0.1:9464/metrics for as long as the run lasts
(`--metrics-host` to listen elsewhere). The registry is the run's own, so nothing of the process leaks into it.

A run's verdicts (a cell failed, a quantized build lost NAB score, a threshold policy storms) are facts about the
run that must outlive it: an exporter that goes when the run ends takes them with it before a production scrape
(every 15-60 s, alert rules with `for:`) has judged them. `--metrics-file PATH` also writes the registry in
Prometheus' text format to PATH, atomically, after every change: node_exporter's textfile collector serves the
last run's figures until the next run of the scenario replaces them (docs/playbooks.md).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from harness.results.schema import CellResult

QUANTILES = (0.5, 0.95, 0.99)
LINGER_S = 6.0  # at most this long for a last scrape at the end (Prometheus' interval here is 1 to 5 s)
LOCAL = "local"  # the `target` of a cell without one (harness.serving.metrics says the same of a service)


class RunMetrics:
    """The run's metrics and their HTTP endpoint."""

    def __init__(self, scenario: str, port: int | None, host: str = "127.0.0.1", textfile: str | Path | None = None,
                 results: str | Path | None = None):
        """`textfile`: where the metrics are also written (node_exporter's textfile collector); `results`: the run
        folder, whose filesystem's free and total bytes are read at each scrape (`harness_results_free_bytes`,
        `harness_results_size_bytes`: a disk filling up is seen before a write fails)."""
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.scenario, self.port, self.host = scenario, port, host
        self.textfile, self._warned = (Path(textfile) if textfile is not None else None), False
        self.registry = CollectorRegistry()
        load = ["scenario", "cell", "target", "path"]
        self._planned = Gauge("harness_cells_planned", "cells this run has to finish", ["scenario"], registry=self.registry)
        self._finished = Counter("harness_cells_finished", "cells finished, by outcome (ok or failed)", ["scenario", "status"],
                                 registry=self.registry)
        self._rps = Gauge("harness_load_achieved_rps", "requests/s answered in the load run's last whole second", load,
                          registry=self.registry)
        self._eps = Gauge("harness_load_achieved_eps", "events/s answered in the load run's last whole second", load,
                          registry=self.registry)
        self._latency = Gauge("harness_load_latency_ms", "request latency in the last whole second, by quantile",
                              [*load, "quantile"], registry=self.registry)
        self._errors = Counter("harness_load_errors", "failed requests of load runs", load, registry=self.registry)
        self._shed = Counter("harness_load_shed", "requests of load runs the service shed (503 + Retry-After)", load,
                             registry=self.registry)
        self._requests = Counter("harness_load_requests", "requests of load runs answered: scored, failed or shed", load,
                                 registry=self.registry)
        self._sla = Gauge("harness_sla_ok", "1 when the cell met the SLA objective, 0 when it failed (absent: not "
                          "measured)", ["scenario", "cell", "target", "objective"], registry=self.registry)
        self._delta = Gauge("harness_nab_standard_delta_pct", "NAB standard of an int8/bf16/fp16/pruned cell against its "
                            "model's torch fp32 row, in percent (the table's nab_standard_delta_pct)",
                            ["scenario", "cell", "target"], registry=self.registry)
        self._storm = Gauge("harness_policy_alerts_per_1k_events", "records a threshold policy (its oracle candidate) "
                            "alerts on, per 1,000 scored records", ["scenario", "cell", "target", "policy"], registry=self.registry)
        for status in ("ok", "failed"):  # both series exist from the start: a rate() over them works at once
            self._finished.labels(scenario, status)
        if results is not None:
            for name, what, field in (("harness_results_free_bytes", "bytes free to this run", "f_bavail"),
                                      ("harness_results_size_bytes", "bytes in all", "f_blocks")):
                gauge = Gauge(name, f"the results folder's filesystem: {what}", ["scenario"], registry=self.registry)
                gauge.labels(scenario).set_function(_disk(Path(results), field))
        self._server: Any = None
        self.scrapes = 0  # how often the endpoint was read (a scraper is watching once it is > 0)
        self.linger_s = LINGER_S
        self.writer: int | None = None  # the thread writing the textfile, while it does
        self.registry.register(_ScrapeCounter(self))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    @property
    def where(self) -> str:
        """Where the metrics go, in words, for the run's first lines."""
        return " and ".join(([self.url] if self.port is not None else []) + ([str(self.textfile)] if self.textfile else []))

    def __enter__(self) -> "RunMetrics":
        from prometheus_client import start_http_server

        from harness.errors import InputError

        self._check_textfile()
        if self.port is None:
            return self
        try:
            self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise InputError(f"cannot serve metrics at {self.host}:{self.port} ({exc.strerror or exc})", field="--metrics-port") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        """Stop serving, after one more scrape if something scrapes: the run's last figures (cells finished, SLA
        verdicts) are set just before the end and would otherwise never be seen."""
        import time

        if self._server is not None and self.scrapes:
            seen, deadline = self.scrapes, time.monotonic() + self.linger_s
            while self.scrapes == seen and time.monotonic() < deadline:
                time.sleep(0.05)
        self._write()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _check_textfile(self) -> None:
        """A textfile that cannot be written is refused before the run starts; the previous run's figures stay in
        it until this run has its first (a cell finished), so its verdicts do not vanish the moment a run starts."""
        if self.textfile is None:
            return
        import tempfile

        from harness.errors import InputError

        try:
            self.textfile.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.textfile.parent, prefix=f".{self.textfile.name}.", suffix=".check"):
                pass
        except OSError as exc:
            raise InputError(f"cannot write the metrics file ({exc.strerror or exc})", self.textfile, "--metrics-file") from None

    def _write(self) -> None:
        """The registry into the textfile, if one was asked for: atomically, so a collector never reads half. Once
        the run has started, a failed write is a warning: the run's own results matter more than its metrics."""
        if self.textfile is None:
            return
        import sys

        from prometheus_client import generate_latest

        import threading

        from harness.atomic import write_bytes
        from harness.errors import InputError

        self.writer = threading.get_ident()
        try:
            write_bytes(self.textfile, generate_latest(self.registry))
        except OSError as exc:
            error = InputError(f"cannot write the metrics file ({exc.strerror or exc})", self.textfile, "--metrics-file")
            if not self._warned:
                print(f"harness: warning: {error}", file=sys.stderr)
            self._warned = True
        finally:
            self.writer = None

    def planned(self, cells: int) -> None:
        self._planned.labels(self.scenario).set(cells)

    def finished(self, ok: bool) -> None:
        self._finished.labels(self.scenario, "ok" if ok else "failed").inc()
        self._write()

    def verdicts(self, done: "list[CellResult]") -> None:
        """What the finished cells say about the builds and policies: each reduced-precision or pruned cell's NAB
        change against its torch fp32 row (once both are done, as the table computes it), and each threshold
        policy's alert rate. Called when a cell finishes."""
        from harness.report import tables
        from harness.results.schema import Status

        ok = [r for r in done if r.status == Status.OK]
        target = {r.cell.id: r.cell.target or LOCAL for r in ok}
        if any(r.cell.backend is not None for r in ok):
            table = tables.build_table(ok)
            reduced = (~table["precision"].isin(["fp32", ""]) & table["precision"].notna()) | (table["pruning"] != "")
            for cell, delta in zip(table["cell"][reduced], table["nab_standard_delta_pct"][reduced]):
                if not math.isnan(delta):  # NaN: its torch fp32 row is not done (or failed)
                    self._delta.labels(self.scenario, cell, target[cell]).set(float(delta))
        for r in ok:
            for p in (r.score.policies if r.score is not None else []):
                if p.alerts_per_1k is not None:
                    self._storm.labels(self.scenario, r.cell.id, target[r.cell.id], p.policy).set(p.alerts_per_1k)
        self._write()

    def load_second(self, cell: str, path: str, requests: int, events: int, errors: int,
                    latency_ms: dict[float, float | None], shed: int = 0, target: str | None = None) -> None:
        """One whole second of a running load test (every generator's, merged): `requests` scored (carrying
        `events`), `errors` failed, `shed` shed; `target` None: the cell has none (`local`)."""
        labels = (self.scenario, cell, target or LOCAL, path)
        self._rps.labels(*labels).set(requests)
        self._eps.labels(*labels).set(events)
        self._errors.labels(*labels).inc(errors)
        self._shed.labels(*labels).inc(shed)
        self._requests.labels(*labels).inc(requests + errors + shed)
        for q, ms in latency_ms.items():
            if ms is not None:
                self._latency.labels(*labels, str(q)).set(ms)
        self._write()

    def sla(self, cell: str, target: str | None, verdicts: dict[str, bool | None]) -> None:
        """A cell's SLA verdict per objective: 1 met, 0 failed; an objective not measured (None) has no series
        (one set before is removed), so "absent" never reads as a pass or a failure."""
        for objective, ok in verdicts.items():
            labels = (self.scenario, cell, target or LOCAL, objective)
            if ok is None:
                try:
                    self._sla.remove(*labels)
                except KeyError:
                    pass
            else:
                self._sla.labels(*labels).set(1 if ok else 0)
        self._write()


class _ScrapeCounter:
    """A collector with no metrics: counts the scrapes of the registry it is in."""

    def __init__(self, metrics: RunMetrics):
        self.metrics = metrics

    def describe(self) -> list:
        return []  # registering must not count as a scrape

    def collect(self) -> list:
        import threading

        if threading.get_ident() != self.metrics.writer:  # the textfile's own read of the registry is no scrape
            self.metrics.scrapes += 1
        return []

def _disk(folder: Path, field: str) -> Callable[[], float]:
    """Bytes of `folder`'s filesystem (statvfs `field` blocks), read when scraped; the nearest existing parent
    stands for a folder not made yet. NaN when unreadable."""

    def read() -> float:
        where = folder
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            st = os.statvfs(where)
        except OSError:
            return float("nan")
        return float(getattr(st, field) * st.f_frsize)

    return read
