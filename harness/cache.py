"""Where the harness keeps what it can rebuild: the materialised synthetic corpus and exported/quantized models."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$HARNESS_CACHE`, else `~/.cache/harness`. The runner passes the driver's value on to Ray workers."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")
