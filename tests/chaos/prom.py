"""A real Prometheus for the chaos tests: it scrapes the real metrics of what a test broke and evaluates the
project's own alert rules (clusters/monitoring/alerts/*.yml), so "the alert fires" is checked by Prometheus itself.

Each rule's `for:` is cut to 0s in the copy the test loads: production keeps its debounce, the test checks that the
expression fires on the real series. Prometheus runs inside the test's network namespace (`enter`: the command
prefix that enters it) on 127.0.0.1, and every query is made from inside that namespace too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "clusters" / "monitoring" / "alerts"
_FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def rule_files() -> list[Path]:
    return sorted(ALERTS.glob("*.yml"))


def alert_rules() -> dict[str, dict[str, Any]]:
    """Every alert rule of the project, by name (with the file it is in under `file`)."""
    out: dict[str, dict[str, Any]] = {}
    for path in rule_files():
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    out[rule["alert"]] = {**rule, "file": path.name}
    return out


def _undebounced(path: Path, dest: Path) -> None:
    """`path`'s rules with every `for:` (and `keep_firing_for:`) cut to nothing."""
    doc = yaml.safe_load(path.read_text()) or {}
    for group in doc.get("groups", []):
        group["interval"] = "1s"
        for rule in group.get("rules", []):
            rule.pop("for", None)
            rule.pop("keep_firing_for", None)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))


class Prometheus:
    """`prometheus` scraping `static` targets (job -> ["host:port", ...]) and Ray's service-discovery files
    (`file_sd`: job -> [path, ...]) every second, with the project's alert rules, inside a namespace."""

    def __init__(self, workdir: Path, enter: list[str], static: dict[str, list[str]] | None = None,
                 file_sd: dict[str, list[str]] | None = None, port: int = 9090, metrics_path: dict[str, str] | None = None,
                 rules: list[Path] | None = None):
        self.workdir, self.enter, self.port = workdir, list(enter), port
        self.rules = rule_files() if rules is None else rules
        self.static, self.file_sd, self.metrics_path = static or {}, file_sd or {}, metrics_path or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        rules = self.workdir / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        for path in self.rules:
            _undebounced(path, rules / path.name)
        jobs: list[dict[str, Any]] = []
        for job, targets in self.static.items():
            jobs.append({"job_name": job, "static_configs": [{"targets": targets}]})
        for job, files in self.file_sd.items():
            jobs.append({"job_name": job, "file_sd_configs": [{"files": files, "refresh_interval": "1s"}]})
        for job in jobs:
            job.update(scrape_interval="1s", scrape_timeout="900ms")
            if job["job_name"] in self.metrics_path:
                job["metrics_path"] = self.metrics_path[job["job_name"]]
        return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules / "*.yml")], "scrape_configs": jobs}

    def __enter__(self) -> "Prometheus":
        from tests.conftest import REQUIREMENTS, require

        met, reason = REQUIREMENTS["needs_prometheus"]
        require(met(), reason)  # skipped without it, failed under CI=true
        prometheus = shutil.which("prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        log = open(self.workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [*self.enter, prometheus, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if "Ready" in self.get("/-/ready"):
                    return self
            except RuntimeError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"prometheus not ready in 30 s: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")

    def __exit__(self, *exc: Any) -> None:
        import os
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def get(self, path: str, **params: str) -> str:
        """GET from inside the namespace."""
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        done = subprocess.run([*self.enter, sys.executable, "-c", _FETCH, url], capture_output=True, text=True, timeout=20)
        if done.returncode != 0:
            raise RuntimeError(f"GET {url}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        return done.stdout

    def _api(self, path: str, **params: str) -> Any:
        body = json.loads(self.get("/api/v1/" + path, **params))
        if body.get("status") != "success":
            raise RuntimeError(f"{path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector: each item's `metric` labels and `value`)."""
        return self._api("query", query=expr)["result"]

    def targets_up(self) -> dict[str, list[str]]:
        """job -> health of each of its scrape targets ("up", "down", "unknown")."""
        out: dict[str, list[str]] = {}
        for t in self._api("targets")["activeTargets"]:
            out.setdefault(t["labels"].get("job", "?"), []).append(t["health"])
        return out

    def alerts(self) -> list[dict[str, Any]]:
        return self._api("alerts")["alerts"]

    def firing(self, alert: str, **labels: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["labels"].get("alertname") == alert and a["state"] == "firing"
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    def wait_firing(self, alert: str, timeout_s: float = 30, **labels: str) -> dict[str, Any]:
        """The first firing instance of `alert` (with `labels`); fails with the rule's expression and the alerts
        there are when none fires within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            hits = self.firing(alert, **labels)
            if hits:
                return hits[0]
            if time.monotonic() > deadline:
                rule = alert_rules().get(alert, {})
                raise AssertionError(f"alert {alert}{labels or ''} did not fire in {timeout_s:g} s; expr: "
                                     f"{rule.get('expr')!r}; alerts now: {[(a['labels'].get('alertname'), a['state']) for a in self.alerts()]}")
            time.sleep(0.5)

    def wait_resolved(self, alert: str, timeout_s: float = 30, **labels: str) -> float:
        """Seconds until no instance of `alert` (with `labels`) fires; fails after `timeout_s`."""
        start = time.monotonic()
        while self.firing(alert, **labels):
            if time.monotonic() - start > timeout_s:
                raise AssertionError(f"alert {alert}{labels or ''} still firing after {timeout_s:g} s")
            time.sleep(0.5)
        return time.monotonic() - start
