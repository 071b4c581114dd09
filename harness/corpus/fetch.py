"""Download the real NAB corpus at a pinned commit and check every file against a committed SHA-256.

The manifest (`nab_files.json`, hashes only) pins exactly the bytes our published numbers were measured on, so a
moved branch, a proxy rewriting line endings or a truncated download is caught instead of silently changing scores.
A fetch either leaves a complete, verified tree at `dest` or nothing at all.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from functools import lru_cache
from pathlib import Path
from typing import Callable

from harness.atomic import public_mode
from harness.errors import InputError

MANIFEST = Path(__file__).with_name("nab_files.json")
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/numenta/NAB/{commit}/"
BASE_URL_ENV = "HARNESS_NAB_BASE_URL"
RETRIES = 3  # extra attempts per file after a connection error or 5xx (never after a 404 or a hash mismatch)
BACKOFF_S = 0.5  # first pause between attempts; doubles each time

FetchProgress = Callable[[int, int], None]  # (files done, files in all)


@lru_cache(maxsize=1)
def manifest() -> tuple[str, dict[str, str]]:
    """(commit, {relative path: sha256 hex}) from the committed manifest."""
    data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return data["commit"], dict(data["files"])


def resolve_base_url(base_url: str | None = None) -> str:
    """The parameter, else $HARNESS_NAB_BASE_URL, else GitHub's raw files at the pinned commit; ends with '/'."""
    commit, _ = manifest()
    url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    url = url.replace("{commit}", commit)
    return url if url.endswith("/") else url + "/"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_tree(root: str | Path) -> list[str]:
    """Relative paths of the manifest that are missing under `root` or whose SHA-256 differs ([] = intact)."""
    root = Path(root)
    _, files = manifest()
    bad = []
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(rel)
    return bad


def fetch_nab(
    dest: str | Path,
    base_url: str | None = None,
    jobs: int = 8,
    timeout: float = 60.0,
    progress: FetchProgress | None = None,
) -> Path:
    """Download and verify every manifest file, then move the whole tree to `dest` in one rename.

    Files land in a private temporary folder beside `dest` (same file system, so the final rename is atomic);
    any failure removes it and raises InputError naming the file, so `dest` is never half-filled.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError("already exists and is not empty; choose another folder", dest)
    if jobs < 1:
        raise InputError(f"jobs must be at least 1, got {jobs}")
    base = resolve_base_url(base_url)
    _, files = manifest()
    total = len(files)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="nab-fetch")
    try:
        if progress:
            progress(0, total)
        pending = {pool.submit(_fetch_one, base, rel, sha, tmp, timeout, stop) for rel, sha in files.items()}
        finished = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                exc = fut.exception()
                if exc is not None:
                    raise exc
                finished += 1
                if progress:
                    progress(finished, total)
        pool.shutdown(wait=True)
        os.chmod(tmp, public_mode(folder=True))  # mkdtemp makes it owner-only; NAB is ordinary data
        try:
            if dest.exists():
                dest.rmdir()  # empty (checked above); renaming onto a folder is not portable
            os.rename(tmp, dest)
        except OSError as exc:  # e.g. someone else filled dest meanwhile
            raise InputError(f"could not move the verified download into place ({exc.strerror})", dest) from None
    except BaseException:
        stop.set()  # running workers give up before writing; queued ones are cancelled
        pool.shutdown(wait=True, cancel_futures=True)  # nobody writes into tmp while we remove it
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _fetch_one(base: str, rel: str, expected: str, tmp: Path, timeout: float, stop: threading.Event) -> None:
    """Download one file (retrying transient failures), verify it, write it under `tmp`."""
    url = base + urllib.parse.quote(rel, safe="/")
    for attempt in range(RETRIES + 1):
        if stop.is_set():
            return
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = resp.read()
            break
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code < 500 or attempt == RETRIES:
                raise InputError(f"HTTP {exc.code} from {url}", rel) from None
        except ValueError as exc:  # urllib's "unknown url type" and friends
            raise InputError(f"cannot download from {url!r} ({exc})", rel) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
            if attempt == RETRIES:
                raise InputError(f"could not download {url} after {RETRIES + 1} attempts ({reason})", rel) from None
        if stop.wait(BACKOFF_S * 2**attempt):
            return
    got = hashlib.sha256(body).hexdigest()
    if got != expected:
        raise InputError(f"SHA-256 mismatch (expected {expected}, got {got}) from {url}", rel)
    if stop.is_set():
        return
    path = tmp / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
