"""Progress on stderr that a person and a log file can both read: a tqdm bar on a terminal, and plain lines
(at most one every 10% or 30 s) when stderr is captured, so no carriage returns flood a job's log."""

from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_EVERY_S = 30.0


class ProgressBar:
    """A run's (or a download's) progress bar: `update(done)` sets the units done so far."""

    def __init__(self, total: float, unit: str, desc: str = "progress", stream: TextIO | None = None):
        self.total, self.unit, self.desc = total, unit, desc
        self.stream = stream or sys.stderr
        self._bar = None
        self._last_line = (-1.0, 0.0)  # (done, time) of the last plain line

    def __enter__(self) -> "ProgressBar":
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, done: float) -> None:
        """Set how many units are done so far."""
        done = min(done, self.total)
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()
            return
        last_done, last_time = self._last_line
        step = max(self.total / 10.0, 1.0)
        if done >= self.total and last_done < self.total or done - last_done >= step or time.monotonic() - last_time >= PLAIN_EVERY_S:
            print(f"{self.desc}: {done:g}/{self.total:g} {self.unit}", file=self.stream, flush=True)
            self._last_line = (done, time.monotonic())

    def write(self, line: str) -> None:
        """A message between progress updates, on a line of its own."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


