"""The run's Prometheus endpoint in process: what it serves, on loopback only, and a busy port refused in one line."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.errors import InputError
from harness.metrics import RunMetrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {(x.name, tuple(sorted(x.labels.items()))): x.value for f in text_string_to_metric_families(text) for x in f.samples}


def test_cells_and_a_load_second_are_served_on_loopback() -> None:
    with RunMetrics("sweep", free_port()) as metrics:
        metrics.linger_s = 0.1  # no second scrape comes here
        assert metrics.url.startswith("http://127.0.0.1:")
        metrics.planned(3)
        metrics.finished(True)
        metrics.finished(False)
        metrics.finished(True)
        metrics.load_second("wg@edge", "http", 40, 40_000, 2, {0.5: 12.5, 0.95: 48.0, 0.99: None}, shed=3, target="edge")
        metrics.load_second("wg", "handle", 10, 10_000, 0, {0.5: 1.0})  # a cell without a target
        got = scrape(metrics.url)
    load = (("cell", "wg@edge"), ("path", "http"), ("scenario", "sweep"), ("target", "edge"))
    assert got[("harness_cells_planned", (("scenario", "sweep"),))] == 3
    assert got[("harness_cells_finished_total", (("scenario", "sweep"), ("status", "ok")))] == 2
    assert got[("harness_cells_finished_total", (("scenario", "sweep"), ("status", "failed")))] == 1
    assert got[("harness_load_achieved_rps", load)] == 40 and got[("harness_load_achieved_eps", load)] == 40_000
    assert got[("harness_load_errors_total", load)] == 2 and got[("harness_load_shed_total", load)] == 3
    assert got[("harness_load_requests_total", load)] == 45  # scored, failed and shed: what an error ratio divides by
    assert got[("harness_load_latency_ms", (*load[:2], ("quantile", "0.95"), *load[2:]))] == 48.0
    assert ("harness_load_latency_ms", (*load[:2], ("quantile", "0.99"), *load[2:])) not in got  # no figure, no series
    local = (("cell", "wg"), ("path", "handle"), ("scenario", "sweep"), ("target", "local"))
    assert got[("harness_load_requests_total", local)] == 10 and got[("harness_load_shed_total", local)] == 0
    with pytest.raises(OSError):  # it stopped with the run
        urllib.request.urlopen(metrics.url, timeout=2)


def test_sla_verdicts_are_one_gauge_per_objective_and_not_measured_is_absent() -> None:
    with RunMetrics("sla", free_port()) as metrics:
        metrics.linger_s = 0.1
        metrics.sla("wg@edge", "edge", {"p95_ms": True, "max_error_rate": False, "max_recovery_s": True})
        metrics.sla("wg", None, {"p95_ms": True})
        metrics.sla("wg@edge", "edge", {"max_recovery_s": None, "min_events_per_s": None})  # measured no more
        got = {k: v for k, v in scrape(metrics.url).items() if k[0] == "harness_sla_ok"}

    def key(cell: str, target: str, objective: str) -> tuple:
        return ("harness_sla_ok", (("cell", cell), ("objective", objective), ("scenario", "sla"), ("target", target)))

    assert got == {key("wg@edge", "edge", "p95_ms"): 1, key("wg@edge", "edge", "max_error_rate"): 0,
                   key("wg", "local", "p95_ms"): 1}


def test_a_busy_port_is_one_input_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InputError, match="--metrics-port.*cannot serve metrics at 127.0.0.1"):
            RunMetrics("sweep", taken.getsockname()[1]).__enter__()


def test_verdicts_go_to_the_textfile_and_outlive_the_exporter(tmp_path) -> None:
    """A reduced build's NAB loss (once its torch fp32 row is done) and each policy's alert rate; the textfile keeps
    the previous run's figures until this run has its first, and keeps this run's after it ends."""
    from prometheus_client.parser import text_string_to_metric_families
    from test_report import result

    from harness.results.schema import PolicyFigures

    def read(path) -> dict[tuple[str, tuple], float]:
        return {(x.name, tuple(sorted(x.labels.items()))): x.value
                for f in text_string_to_metric_families(path.read_text()) for x in f.samples}

    textfile = tmp_path / "collector" / "harness-run-sweep.prom"
    textfile.parent.mkdir()
    textfile.write_text("# the previous run's\nharness_cells_planned{scenario=\"sweep\"} 7\n")
    torch, int8 = result("ae.torch-fp32", "torch", "fp32", 50.0, 1000.0), result("ae.ort-int8", "onnxruntime", "int8", 40.0, 2500.0)
    int8.score.policies = [PolicyFigures(policy="rolling_quantile", oracle_params="q=0.9", nab_standard=-800.0, nab_standard_cv=-800.0,
                                         folds={}, f1=0.01, precision=0.01, recall=1.0, latency_mean_s=1.0, fp_events=900, seconds=0.1,
                                         alert_rows=144, scored_rows=1000)]
    with RunMetrics("sweep", None, textfile=textfile) as metrics:
        metrics.planned(2)
        assert read(textfile) == {("harness_cells_planned", (("scenario", "sweep"),)): 7}  # nothing of this run yet
        metrics.finished(True)
        metrics.verdicts([int8])  # its torch fp32 row is not done: no loss to report yet
        assert not any(k[0] == "harness_nab_standard_delta_pct" for k in read(textfile))
        metrics.finished(True)
        metrics.verdicts([torch, int8])
    got = read(textfile)
    assert got[("harness_nab_standard_delta_pct", (("cell", "ae.ort-int8"), ("scenario", "sweep"), ("target", "local")))] == pytest.approx(-20.0)
    assert not any(k[0] == "harness_nab_standard_delta_pct" and ("cell", "ae.torch-fp32") in k[1] for k in got)
    assert got[("harness_policy_alerts_per_1k_events", (("cell", "ae.ort-int8"), ("policy", "rolling_quantile"), ("scenario", "sweep"),
                                                       ("target", "local")))] == pytest.approx(144.0)
    assert got[("harness_cells_finished_total", (("scenario", "sweep"), ("status", "ok")))] == 2
    assert sorted(p.name for p in textfile.parent.iterdir()) == [textfile.name]  # no temporary file left beside it


def test_writing_the_textfile_is_not_a_scrape(tmp_path) -> None:
    """The endpoint lingers for a last scrape only when something scrapes it; the textfile's reads do not count."""
    import time

    with RunMetrics("end", free_port(), textfile=tmp_path / "end.prom") as metrics:
        metrics.finished(True)
        started = time.monotonic()
    assert metrics.scrapes == 0 and time.monotonic() - started < 1.0


def test_an_unwritable_metrics_file_is_one_input_error(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="--metrics-file: cannot write the metrics file"):
        RunMetrics("sweep", None, textfile=tmp_path / "file" / "x.prom").__enter__()

def test_the_last_figures_are_scraped_before_the_endpoint_closes() -> None:
    """Cells finished and SLA verdicts are set just before a run ends: the endpoint waits for one more scrape."""
    import threading
    import time

    got: list[dict] = []
    with RunMetrics("end", free_port()) as metrics:
        scrape(metrics.url)  # a scraper is watching
        metrics.finished(True)
        threading.Timer(0.5, lambda: got.append(scrape(metrics.url))).start()
        started = time.monotonic()
    assert 0.4 < time.monotonic() - started < metrics.linger_s
    assert got[0][("harness_cells_finished_total", (("scenario", "end"), ("status", "ok")))] == 1
