"""`harness load URL ...` (docs/load.md): its flags checked (one line naming a bad one, exit 2), the token read, the
streams warmed, then one run or the peak search, printed. Exit 0 for a VALID run (or a peak found), 1 otherwise
(a failed warm-up included), so a script can gate on it. No Ray here: it loads any service from anywhere.
"""

from __future__ import annotations

import json
import math
import sys
from argparse import ArgumentParser, Namespace
from typing import Any

from harness.errors import InputError

WARMUP_TIMEOUT_S = 120.0  # at least, per warm-up request: the one that trains a learned model may take a while


def run_command(args: Namespace) -> int:
    from harness.load import LoadSettings, ValidityRules, WarmupError, drive, find_peak, rate_probe, warm_up_url
    from harness.load.http_target import auth_headers
    from harness.load.payload import request_bodies, synthetic_streams

    check_flags(args)
    rules = ValidityRules(min_duration_s=args.min_duration if args.min_duration is not None else min(10.0, args.duration))
    try:
        shape = {name: getattr(args, _attr(flag)) for flag, owner, name, _ in _FLAGS if owner == "RunShape"}
        settings = LoadSettings(rate=args.rate, concurrency=args.concurrency, rules=rules, **shape)
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


# --- the flags ---------------------------------------------------------------------------------------------------
# Each flag is a field of the load settings (harness.load.settings): its default, help and bounds come from there.

_FLAGS: tuple[tuple[str, str, str, str], ...] = (
    # flag, settings class, field, what the number counts
    ("--events-per-request", "RunShape", "events_per_request", "events"),
    ("--duration", "RunShape", "duration_s", "seconds"),
    ("--warmup", "RunShape", "warmup_s", "seconds"),
    ("--arrivals", "RunShape", "arrivals", ""),
    ("--think-time", "RunShape", "think_time_s", "seconds"),
    ("--max-in-flight", "RunShape", "max_in_flight", "requests"),
    ("--timeout", "RunShape", "timeout_s", "seconds"),
    ("--encoding", "LoadSpec", "encoding", ""),
    ("--streams", "LoadSpec", "streams", "streams"),
    ("--slo-p95-ms", "LoadSpec", "slo_p95_ms", "milliseconds"),
)
_CHOSEN = (  # flags without a default: one of --rate / --concurrency, and the VALID duration
    ("--rate", "LoadSettings", "rate", "requests per second"),
    ("--concurrency", "LoadSettings", "concurrency", "clients"),
    ("--min-duration", "ValidityRules", "min_duration_s", "seconds"),
)


def _info(owner: str, name: str) -> Any:
    from harness.load import settings

    cls = getattr(settings, owner)
    return cls.model_fields[name]


def add_arguments(parser: ArgumentParser) -> None:
    """`harness load`'s flags, each with its settings field's default and description."""
    from typing import get_args

    parser.add_argument("url", help="the service's URL (http://host:port, or its /v1/score)")
    how = parser.add_mutually_exclusive_group(required=True)
    for flag, owner, name, _ in _CHOSEN[:2]:
        info = _info(owner, name)
        how.add_argument(flag, type=_number(info), help=info.description)
    for flag, owner, name, unit in _FLAGS:
        info = _info(owner, name)
        choices = get_args(info.annotation) or None
        kind = None if choices else _number(info)
        parser.add_argument(flag, type=kind, choices=choices, default=info.default,
                            metavar=None if choices else ("S" if unit == "seconds" else "N"),
                            help=f"{info.description} (default {info.default})")
    parser.add_argument(_CHOSEN[2][0], type=float, metavar="S", help="VALID needs this many measured seconds (default: "
                        "min(10, --duration))")
    parser.add_argument("--corpus", help="replay this NAB-layout folder's files instead of synthetic streams")
    parser.add_argument("--find-peak", action="store_true",
                        help="search the highest rate whose p95 meets --slo-p95-ms (from --rate)")
    parser.add_argument("--token-file", metavar="FILE", help="send `Authorization: Bearer <token>` on every request, "
                        "the token being FILE's one line (the service's serve.token_file)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _attr(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _number(info: Any) -> type:
    from typing import get_args

    return int if int in (info.annotation, *get_args(info.annotation)) else float


def _bound(info: Any) -> tuple[str, float] | None:
    """The lower bound of a settings field: ('>', 0) or ('>=', 1)."""
    for m in info.metadata:
        if getattr(m, "gt", None) is not None:
            return ">", m.gt
        if getattr(m, "ge", None) is not None:
            return ">=", m.ge
    return None


def check_flags(args: Namespace) -> None:
    """One InputError line naming the first flag whose value is out of its field's range (flags left out are not
    checked)."""
    for flag, owner, name, unit in (*_CHOSEN, *_FLAGS):
        value = getattr(args, _attr(flag), None)
        info = _info(owner, name)
        bound = _bound(info)
        if value is None or bound is None:
            continue
        op, limit = bound
        if not (math.isfinite(value) and (value > limit if op == ">" else value >= limit)):
            what = "an integer" if _number(info) is int else "a number"
            raise InputError(f"expected {what} of {unit} {op} {limit:g}, got {value:g}", field=flag)


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
