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
        assert metrics.url.startswith("http://127.0.0.1:")
        metrics.planned(3)
        metrics.finished(True)
        metrics.finished(False)
        metrics.finished(True)
        metrics.load_second("wg@edge", "http", 40, 40_000, 2, {0.5: 12.5, 0.95: 48.0, 0.99: None})
        got = scrape(metrics.url)
    load = (("cell", "wg@edge"), ("path", "http"), ("scenario", "sweep"))
    assert got[("harness_cells_planned", (("scenario", "sweep"),))] == 3
    assert got[("harness_cells_finished_total", (("scenario", "sweep"), ("status", "ok")))] == 2
    assert got[("harness_cells_finished_total", (("scenario", "sweep"), ("status", "failed")))] == 1
    assert got[("harness_load_achieved_rps", load)] == 40 and got[("harness_load_achieved_eps", load)] == 40_000
    assert got[("harness_load_errors_total", load)] == 2
    assert got[("harness_load_latency_ms", (*load[:2], ("quantile", "0.95"), load[2]))] == 48.0
    assert ("harness_load_latency_ms", (*load[:2], ("quantile", "0.99"), load[2])) not in got  # no figure, no series
    with pytest.raises(OSError):  # it stopped with the run
        urllib.request.urlopen(metrics.url, timeout=2)


def test_a_busy_port_is_one_input_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InputError, match="--metrics-port.*cannot serve metrics at 127.0.0.1"):
            RunMetrics("sweep", taken.getsockname()[1]).__enter__()
