"""API tokens: the scoring service's bearer token, read from a file (never from a command line, where `ps` shows
it), and compared in constant time."""

from __future__ import annotations

import hmac
from pathlib import Path

from harness.errors import InputError

MIN_TOKEN_CHARS = 16  # shorter tokens are guessable


def read_token(path: str | Path, field: str) -> str:
    """The token in `path` (its only line, surrounding whitespace removed), or one InputError line naming
    `field`: a missing, unreadable, empty, multi-line or too short file, or a folder."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a folder: expected a file holding the API token", field=field)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the API token file {p} ({getattr(exc, 'strerror', None) or exc})", field=field) from None
    token = text.strip()
    if not token or "\n" in token or any(c.isspace() for c in token):
        raise InputError(f"{p}: expected one line holding the API token (no spaces)", field=field)
    if len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"{p}: the API token has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
                         "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)", field=field)
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` as a bearer token; constant-time in the token."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
