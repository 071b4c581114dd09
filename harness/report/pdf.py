"""The report as a PDF: the HTML printed by headless Chromium (its print CSS: landscape A4, a page per section),
so the PDF is the page a reader would print, with no second layout to keep in step."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.atomic import public_mode
from harness.errors import InputError, RunStopped

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PRINT_TIMEOUT_S = 120


def browser() -> str:
    """The Chromium to print with: $HARNESS_CHROMIUM, else the first of BROWSERS on PATH; an InputError saying
    what to install when there is none."""
    given = os.environ.get("HARNESS_CHROMIUM")
    if given:
        if shutil.which(given) is None:
            raise InputError("is not an executable Chromium (HARNESS_CHROMIUM)", given)
        return given
    for name in BROWSERS:
        if shutil.which(name):
            return name
    raise InputError("--pdf needs headless Chromium and none is on PATH: install it (Debian: apt-get install chromium) "
                     "or set HARNESS_CHROMIUM to its executable", field="--pdf")


def print_pdf(html: Path, out: Path) -> Path:
    """Print `html` to `out` atomically (a temporary file beside it, renamed when Chromium is done): a failed
    print leaves no half PDF. Chromium runs with a throwaway profile and no network: the page needs none."""
    exe = browser()
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
    except OSError as exc:
        raise InputError(f"cannot write the PDF here ({exc.strerror or exc})", out) from None
    try:
        with tempfile.TemporaryDirectory(prefix="harness-chromium-") as profile:
            cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                   f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", "--no-pdf-header-footer",
                   f"--print-to-pdf={tmp}", Path(html).resolve().as_uri()]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PRINT_TIMEOUT_S)
        if proc.returncode != 0 or os.path.getsize(tmp) == 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RunStopped(f"Chromium ({exe}) could not print {html} to PDF (exit {proc.returncode}): {last}")
        os.chmod(tmp, public_mode())  # a report is published: it follows the umask, as the HTML does
        os.replace(tmp, out)
    except subprocess.TimeoutExpired:
        raise RunStopped(f"Chromium ({exe}) did not print {html} within {PRINT_TIMEOUT_S} s") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
