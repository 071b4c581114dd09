"""Atomic file writes: a reader never sees half a file, an interrupted run never leaves one.

A file written here gets the mode an ordinary `open()` would give it, 0666 less the umask, so that results a team
or a CI publishes (a run folder, its report, a metrics file node_exporter reads, a corpus) are as readable as the
umask says; the temporary file it starts as is private (mkstemp's 0600), so a secret written with `private=True`
(a cluster's state, which holds its token) is never readable by others, not even for a moment.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any


_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc/self/status), since os.umask can
    only be read by setting it, which another thread's file creation would see; else set and restored under a lock."""
    try:
        found = re.search(r"^Umask:\s*([0-7]+)$", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        found = None
    if found:
        return int(found.group(1), 8)
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
        return mask


def public_mode(folder: bool = False) -> int:
    """The mode `open()` (0666) or `mkdir()` (0777) would give under the current umask."""
    return (0o777 if folder else 0o666) & ~umask()


def write_bytes(path: str | Path, data: bytes, private: bool = False) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target: mode 0666 less the umask,
    or 0600 with `private` (what the temporary file has from the start). Folders it makes follow the umask. A failed
    write (a full disk) leaves the target as it was and no temporary file; its OSError names the target, which the
    write of an open file descriptor alone would not (`[Errno 28] No space left on device: 'run/cells/x/result.json'`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            if not private:
                os.fchmod(fh.fileno(), public_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise


def _naming(exc: OSError, path: Path) -> OSError:
    """`exc` as the same kind of OSError, naming `path` (the file meant, not a temporary one)."""
    if exc.errno is None or exc.filename == str(path):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def write_text(path: str | Path, text: str, private: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), private)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    """numpy scalars and paths appear in results; make them plain JSON."""
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
