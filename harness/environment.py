"""The machine and the code a run used, recorded in its manifest so that a row of its table can be reproduced."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("harness", "ray", "numpy", "pandas", "pydantic", "pyyaml", "torch", "onnxruntime", "openvino", "nncf")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit(package_dir: Path) -> str | None:
    """HEAD (+ "-dirty") of the checkout the package lives in, if it is the top of one (an installed copy inside
    some other repository must not report that repository's commit)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=package_dir, capture_output=True, text=True, timeout=5, check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != package_dir.parent.resolve():
            return None
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def tree_sha256(package_dir: Path) -> str:
    """A hash of the package's source files (names and bytes): the code's identity where there is no git
    checkout, as in the working directory `ray job submit` uploads."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json"):
            rel = path.relative_to(package_dir).as_posix()
            h.update(f"{rel}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def code_identity() -> dict[str, str | None]:
    """The harness code that ran: its git commit (with -dirty for local changes) when it is a checkout, and
    always the hash of its source tree and where it was imported from."""
    package_dir = Path(__file__).resolve().parent
    return {"git_commit": git_commit(package_dir), "tree_sha256": tree_sha256(package_dir), "package_dir": str(package_dir)}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    import os

    return {
        "code": code_identity(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
