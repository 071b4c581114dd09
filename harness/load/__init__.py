"""Load generator for the scoring service: plain asyncio, no Ray, so the same code runs from the CLI
(`drive`), inside a Ray actor (`run_load` with any async `send`, e.g. one calling a Serve DeploymentHandle),
or in a test against a local server.

    settings = LoadSettings(rate=200, duration_s=30, events_per_request=100)
    warmed = warm_up_url("http://127.0.0.1:8000", streams, 100)              # every stream trained first
    bodies = request_bodies(streams, settings.events_per_request, first=warmed.events)
    summary = drive("http://127.0.0.1:8000", settings, bodies)   # LoadSummary, judged VALID or not
    print(summary.to_json())

Pieces: settings (every run's settings, defined once), schedule (when requests are due), open_loop / closed_loop (the two executors), recorder (HdrHistogram
latencies and a per-second series), outcome (a run's mergeable result), summary (what is reported), validity
(MLPerf-style VALID rules), peak (the highest rate within an SLO), http_target (the HTTP `send`), response (every
answer checked; shed told from failed), errors (how failures are named), payload (pre-encoded request bodies),
warmup (streams trained before measuring), client (a run against a URL or any `send`), command (`harness load`).

The names below are imported from their modules when first used, so importing one piece (the settings, for
the CLI's flags) does not import the rest (aiohttp, HdrHistogram).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {  # name -> the module of harness.load that defines it
    **dict.fromkeys(['run_closed_loop'], "closed_loop"),
    **dict.fromkeys(['BAD_RESPONSE', 'SHED', 'SendError', 'Shed', 'error_kind'], "errors"),
    **dict.fromkeys(['run_open_loop'], "open_loop"),
    **dict.fromkeys(['LoadOutcome', 'Send'], "outcome"),
    **dict.fromkeys(['RequestBodies', 'request_bodies', 'synthetic_streams'], "payload"),
    **dict.fromkeys(['PeakResult', 'find_peak', 'find_peak_async'], "peak"),
    **dict.fromkeys(['Recorder'], "recorder"),
    **dict.fromkeys(['LoadSettings', 'LoadSpec', 'RunShape'], "settings"),
    **dict.fromkeys(['LatencyMs', 'LoadSummary', 'SecondStats'], "summary"),
    **dict.fromkeys(['ValidityRules', 'judge'], "validity"),
    **dict.fromkeys(['Warmed', 'WarmupError', 'warm_up', 'warm_up_async'], "warmup"),
    **dict.fromkeys(['drive', 'drive_async', 'rate_probe', 'run_load', 'warm_up_url'], "client"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'harness.load' has no attribute {name!r}")
    return getattr(importlib.import_module(f"harness.load.{_WHERE[name]}"), name)
