"""`harness load URL ...` (docs/load.md): its flags checked (one line naming a bad one, exit 2), the token read, the
streams warmed, then one run or the peak search, printed. Exit 0 for a VALID run (or a peak found), 1 otherwise
(a failed warm-up included), so a script can gate on it. No Ray here: it loads any service from anywhere.
"""

from __future__ import annotations

import json
import math
import sys
from argparse import Namespace
from typing import Any, Callable

from harness.errors import InputError

WARMUP_TIMEOUT_S = 120.0  # at least, per warm-up request: the one that trains a learned model may take a while


def run_command(args: Namespace) -> int:
    from harness.load import LoadSettings, ValidityRules, WarmupError, drive, find_peak, rate_probe, warm_up_url
    from harness.load.http_target import auth_headers
    from harness.load.payload import request_bodies, synthetic_streams

    check_flags(args)
    rules = ValidityRules(min_duration_s=args.min_duration if args.min_duration is not None else min(10.0, args.duration))
    try:
        settings = LoadSettings(rate=args.rate, concurrency=args.concurrency, events_per_request=args.events_per_request,
                                duration_s=args.duration, warmup_s=args.warmup, arrivals=args.arrivals,
                                think_time_s=args.think_time, max_in_flight=args.max_in_flight, timeout_s=args.timeout, rules=rules)
    except ValueError as exc:  # the flags were checked one by one above: this is a combination
        raise InputError(_first_error_line(exc), field="load settings") from None
    if args.find_peak and args.rate is None:
        raise InputError("--find-peak starts from --rate", field="--find-peak")
    headers = auth_headers(_token(args.token_file))
    check_url(args.url)
    streams = _corpus_streams(args.corpus, args.streams) if args.corpus else synthetic_streams(args.streams)
    try:
        warmed = warm_up_url(args.url, streams, args.events_per_request, args.encoding,
                             timeout_s=max(args.timeout, WARMUP_TIMEOUT_S), headers=headers)
    except WarmupError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 1
    if not args.json:
        print(warmed.line(), flush=True)
    warmup = {"seconds": warmed.seconds, "requests": warmed.requests, "events": sum(warmed.events.values()),
              "streams": len(warmed.events)}
    bodies = request_bodies(streams, args.events_per_request, args.encoding, first=warmed.events)
    if args.find_peak:
        peak = find_peak(rate_probe(args.url, settings, bodies, headers=headers), start_rps=args.rate,
                         slo_p95_ms=args.slo_p95_ms, max_error_rate=rules.max_error_rate)
        print(_with(peak.model_dump_json(), warmup) if args.json else peak_text(peak))
        return 0 if peak.peak_rps is not None else 1
    summary = drive(args.url, settings, bodies, headers=headers)
    print(_with(summary.to_json(per_second=False), warmup) if args.json else summary_text(summary))
    return 0 if summary.valid else 1


# --- the flags --------------------------------------------------------------------------------------------------

def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _not_negative(v: float) -> bool:
    return math.isfinite(v) and v >= 0


_FLAGS: tuple[tuple[str, str, Callable[[Any], bool], str], ...] = (
    # flag, attribute, rule, what is expected
    ("--rate", "rate", _positive, "a number of requests per second > 0"),
    ("--concurrency", "concurrency", lambda v: v >= 1, "a number of clients >= 1"),
    ("--events-per-request", "events_per_request", lambda v: v >= 1, "an integer >= 1"),
    ("--duration", "duration", _positive, "a number of seconds > 0"),
    ("--warmup", "warmup", _not_negative, "a number of seconds >= 0"),
    ("--think-time", "think_time", _not_negative, "a number of seconds >= 0"),
    ("--streams", "streams", lambda v: v >= 1, "an integer >= 1"),
    ("--max-in-flight", "max_in_flight", lambda v: v >= 1, "an integer >= 1"),
    ("--timeout", "timeout", _positive, "a number of seconds > 0"),
    ("--slo-p95-ms", "slo_p95_ms", _positive, "a number of milliseconds > 0"),
    ("--min-duration", "min_duration", _positive, "a number of seconds > 0"),
)


def check_flags(args: Namespace) -> None:
    """One InputError line naming the first flag whose value is out of range (flags left out are not checked)."""
    for flag, attr, ok, expected in _FLAGS:
        value = getattr(args, attr, None)
        if value is not None and not ok(value):
            raise InputError(f"expected {expected}, got {value:g}", field=flag)


def _token(path: str | None) -> str | None:
    if path is None:
        return None
    from harness.tokens import read_token

    return read_token(path, field="--token-file")


def check_url(url: str) -> None:
    """An http(s) URL something answers on, or one InputError line (before any load is offered)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"expected an http:// or https:// URL, got {url!r}", field="url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise InputError(f"nothing answers at {url} ({getattr(exc, 'strerror', None) or exc})", field="url") from None


def _first_error_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else str(exc)


def _corpus_streams(corpus: str, n: int) -> dict:
    from harness.corpus.layout import load_corpus

    files = load_corpus(corpus).files[:n]
    return {f.name: f.values for f in files}


# --- what is printed --------------------------------------------------------------------------------------------

def _with(doc_json: str, warmup: dict[str, Any]) -> str:
    """One JSON object: the summary (or peak result) and what the warm-up took."""
    return json.dumps({**json.loads(doc_json), "warmup": warmup})


def summary_text(s: Any) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lat = lambda name, m: (f"latency ms, {name}: p50 {fmt(m.p50)}  p90 {fmt(m.p90)}  p95 {fmt(m.p95)}  "  # noqa: E731
                           f"p99 {fmt(m.p99)}  max {fmt(m.max)}")
    head = (f"offered {s.offered_rps:g} req/s, " if s.offered_rps else f"{s.concurrency} clients, ")
    kinds = f" {s.error_kinds}" if s.error_kinds else ""
    return "\n".join([
        f"{head}scored {s.achieved_rps:.1f} req/s over {s.duration_s:.1f} s",
        f"goodput {s.achieved_eps:,.0f} events/s scored; throughput {s.answered_rps or 0:.1f} req/s answered "
        "(scored, shed or refused)",
        lat("scored", s.latency_ms),
        lat("every answer", s.answered_latency_ms),
        f"requests {s.requests} scored, {s.shed} shed, {s.errors} errors{kinds}, {s.dropped} dropped",
        "VALID" if s.valid else "INVALID: " + "; ".join(s.reasons),
    ])


def peak_text(peak: Any) -> str:
    probes = ", ".join(f"{p.rps:g}{'' if p.passed else ' (fail)'}" for p in peak.probes)
    if peak.peak_rps is None:
        return f"no rate passed (tried {probes})"
    s = peak.summary
    return (f"peak {peak.peak_rps:g} req/s = {s.achieved_eps:,.0f} events/s at p95 {s.latency_ms.p95:.1f} ms "
            f"(tried {probes})")
