"""`fetch_nab` against a real HTTP server on 127.0.0.1 serving the read-only NAB copy (or a doctored copy of it)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.corpus import fetch
from harness.corpus.fetch import DEFAULT_DETECTORS, fetch_nab, files_for, manifest, parse_detectors, results_manifest, verify_tree
from harness.corpus.layout import load_corpus
from harness.errors import InputError

from conftest import NAB, harness, needs_nab, needs_nab_results, one_error_line

pytestmark = pytest.mark.timeout(120)  # a local HTTP server; the CLI test runs two fetches
DEFAULT_SET = needs_nab_results(*DEFAULT_DETECTORS)  # what a default fetch downloads, served from NAB

CORRUPT = "data/realKnownCause/nyc_taxi.csv"
MISSING = "labels/combined_windows.json"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


class _Flaky(_Quiet):
    """Answers 503 to the first request for each path, then serves it: the fetch must retry."""

    seen: set[str] = set()
    lock = threading.Lock()
    requests: list[str] = []

    def do_GET(self) -> None:
        with self.lock:
            self.requests.append(self.path)
            first = self.path not in self.seen
            self.seen.add(self.path)
        if first:
            self.send_error(503)
            return
        super().do_GET()


@contextmanager
def serve(root: Path, handler: type[http.server.SimpleHTTPRequestHandler] = _Quiet) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def copy_manifest_files(dst: Path, skip: str | None = None) -> Path:
    """Only the manifest's files (about 20 MB), never the data into the project."""
    for rel in manifest()[1]:
        if rel != skip:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(NAB / rel, dst / rel)
    return dst


def test_manifest_pins_the_commit_and_lists_every_file() -> None:
    commit, files = manifest()
    assert commit == "ea702d75cc2258d9d7dd35ca8e5e2539d71f3140"
    assert sum(rel.startswith("data/") for rel in files) == 58
    assert len(files) == 63


@needs_nab
def test_manifest_matches_the_reference_copy() -> None:
    assert verify_tree(NAB) == []


@DEFAULT_SET
def test_full_fetch(tmp_path: Path) -> None:
    """The default: the corpus and the four default detectors' raw outputs (~83 MB; ~1.2 s from loopback)."""
    dest = tmp_path / "out" / "nab"
    calls: list[tuple[int, int]] = []
    with serve(NAB) as url:
        got = fetch_nab(dest, base_url=url, progress=lambda done, total: calls.append((done, total)))
    assert got == dest
    files = files_for(DEFAULT_DETECTORS)
    assert len(files) == 63 + 4 * 58
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(files)
    for rel in files:
        assert (dest / rel).read_bytes() == (NAB / rel).read_bytes()
    assert verify_tree(dest, DEFAULT_DETECTORS) == []
    assert len(load_corpus(dest, values=False).files) == 58
    assert sorted(d.name for d in (dest / "results").iterdir() if d.is_dir()) == sorted(DEFAULT_DETECTORS)
    assert calls[0] == (0, len(files)) and calls[-1] == (len(files), len(files))
    assert [p.name for p in dest.parent.iterdir()] == ["nab"]  # no temporary folder left beside it


@needs_nab
def test_base_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(NAB) as url:
        monkeypatch.setenv("HARNESS_NAB_BASE_URL", url.rstrip("/"))
        assert fetch.resolve_base_url() == url
        fetch_nab(tmp_path / "nab", jobs=3, detectors=())
    assert verify_tree(tmp_path / "nab") == []


def test_default_base_url_is_the_pinned_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_NAB_BASE_URL", raising=False)
    assert fetch.resolve_base_url() == (
        "https://raw.githubusercontent.com/numenta/NAB/ea702d75cc2258d9d7dd35ca8e5e2539d71f3140/"
    )


@needs_nab
def test_corrupted_file_is_refused(tmp_path: Path) -> None:
    served = copy_manifest_files(tmp_path / "served")
    data = bytearray((served / CORRUPT).read_bytes())
    data[100] ^= 0x01
    (served / CORRUPT).write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with serve(served) as url, pytest.raises(InputError) as err:
        fetch_nab(out / "nab", base_url=url, detectors=())
    msg = str(err.value)
    assert CORRUPT in msg and "SHA-256" in msg and manifest()[1][CORRUPT] in msg
    assert "\n" not in msg
    assert not (out / "nab").exists()
    assert list(out.iterdir()) == []  # the temporary download folder is gone too
    assert verify_tree(served) == [CORRUPT]


@needs_nab
def test_missing_file_is_a_404(tmp_path: Path) -> None:
    served = copy_manifest_files(tmp_path / "served", skip=MISSING)
    out = tmp_path / "out"
    out.mkdir()
    with serve(served) as url, pytest.raises(InputError) as err:
        fetch_nab(out / "nab", base_url=url, detectors=())
    msg = str(err.value)
    assert MISSING in msg and "HTTP 404" in msg and url in msg
    assert list(out.iterdir()) == []
    assert verify_tree(served) == [MISSING]


@needs_nab
def test_5xx_is_retried_but_404_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.0)
    monkeypatch.setattr(_Flaky, "seen", set())
    monkeypatch.setattr(_Flaky, "requests", [])
    with serve(NAB, _Flaky) as url:
        fetch_nab(tmp_path / "nab", base_url=url, detectors=())
    assert verify_tree(tmp_path / "nab") == []
    assert len(_Flaky.requests) == 2 * 63

    served = copy_manifest_files(tmp_path / "served", skip=MISSING)
    monkeypatch.setattr(_Flaky, "seen", {"/" + MISSING})  # its 503 is spent: the next answer is a 404
    monkeypatch.setattr(_Flaky, "requests", [])
    with serve(served, _Flaky) as url, pytest.raises(InputError, match="HTTP 404"):
        fetch_nab(tmp_path / "other", base_url=url, jobs=1, detectors=())
    assert _Flaky.requests.count("/" + MISSING) == 1


def test_unreachable_server_gives_up_after_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.0)
    with serve(tmp_path) as url:
        pass  # the port is closed again: every connection is refused
    with pytest.raises(InputError, match="after 4 attempts"):
        fetch_nab(tmp_path / "nab", base_url=url, jobs=2, timeout=5.0)
    assert list(tmp_path.iterdir()) == []


def test_non_empty_dest_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "nab"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not empty; choose another folder"):
        fetch_nab(dest, base_url="http://127.0.0.1:9/")
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["nab"]


@needs_nab
def test_empty_dest_is_filled(tmp_path: Path) -> None:
    dest = tmp_path / "nab"
    dest.mkdir()
    with serve(NAB) as url:
        fetch_nab(dest, base_url=url, detectors=())
    assert verify_tree(dest) == []


def test_verify_tree_on_an_empty_folder_lists_everything(tmp_path: Path) -> None:
    assert verify_tree(tmp_path) == list(manifest()[1])


@DEFAULT_SET
def test_the_command_prints_plain_progress_lines_and_its_error_on_a_line_of_its_own(tmp_path: Path) -> None:
    """stderr captured (not a terminal): whole lines, no carriage returns; a failure is the last line."""
    import subprocess
    import sys

    served = copy_manifest_files(tmp_path / "served", skip=MISSING)
    with serve(NAB) as good, serve(served) as bad:
        ok = subprocess.run([sys.executable, "-m", "harness", "nab", "fetch", str(tmp_path / "ok"), "--base-url", good],
                            capture_output=True, text=True, timeout=120)
        failed = subprocess.run([sys.executable, "-m", "harness", "nab", "fetch", str(tmp_path / "bad"), "--base-url", bad,
                                 "--detectors", "none"], capture_output=True, text=True, timeout=120)
    total = len(files_for(DEFAULT_DETECTORS))  # the default set
    assert verify_tree(tmp_path / "ok", DEFAULT_DETECTORS) == []
    assert ok.returncode == 0, ok.stderr
    assert "\r" not in ok.stderr and ok.stderr.splitlines()[-1] == f"fetched: {total}/{total} files"
    assert 2 <= len(ok.stderr.splitlines()) <= 13  # about one line per 10%, not one per file
    assert failed.returncode == 2 and "\r" not in failed.stderr
    last = failed.stderr.splitlines()[-1]
    assert last.startswith("harness: error: ") and MISSING in last and "HTTP 404" in last, failed.stderr
    assert all(line.startswith("fetched: ") for line in failed.stderr.splitlines()[:-1]), failed.stderr


# --- the published detectors' raw outputs ---------------------------------------------------------------------

SMALL = ("data/realKnownCause/nyc_taxi.csv", "data/realTraffic/speed_7578.csv")  # two data files stand in for 58
RAW = "results/twitterADVec/realKnownCause/twitterADVec_nyc_taxi.csv"


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    """The manifests cut to two data files (and those files' raw outputs): a results fetch of a few files, with
    the committed hashes. Returns the files a fetch of numenta and twitterADVec must leave."""
    commit, files = manifest()
    data = sorted(rel for rel in files if rel.startswith("data/"))
    keep = {rel: sha for rel, sha in files.items() if not rel.startswith("data/") or rel in SMALL}
    cut = {det: (size, tuple(h for rel, h in zip(data, hashes) if rel in SMALL))
           for det, (size, hashes) in results_manifest().items()}
    monkeypatch.setattr(fetch, "manifest", lambda: (commit, keep))
    monkeypatch.setattr(fetch, "results_manifest", lambda: cut)
    return tuple(files_for(("numenta", "twitterADVec")))


def test_results_manifest_pins_every_published_detector() -> None:
    """16 detectors x 58 raw outputs, one per data file, at the corpus's commit; the default set among them."""
    import json

    data = json.loads(fetch.RESULTS_MANIFEST.read_text())
    assert data["commit"] == manifest()[0]
    assert len(results_manifest()) == 16 and set(DEFAULT_DETECTORS) <= set(results_manifest())
    assert all(len(hashes) == 58 and size > 10_000_000 for size, hashes in results_manifest().values())
    files = files_for(("numenta",))
    assert files[RAW.replace("twitterADVec", "numenta")] == results_manifest()["numenta"][1][
        sorted(rel for rel in manifest()[1] if rel.startswith("data/")).index(SMALL[0])]
    assert len(files_for(tuple(results_manifest()))) == 63 + 16 * 58


@DEFAULT_SET
def test_results_manifest_matches_the_reference_copy() -> None:
    assert verify_tree(NAB, DEFAULT_DETECTORS) == []


@needs_nab_results("numenta", "twitterADVec")
def test_a_named_few_detectors_are_fetched_and_verified(tmp_path: Path, small: tuple[str, ...]) -> None:
    with serve(NAB) as url:
        fetch_nab(tmp_path / "nab", base_url=url, detectors=("numenta", "twitterADVec"))
    got = sorted(p.relative_to(tmp_path / "nab").as_posix() for p in (tmp_path / "nab").rglob("*") if p.is_file())
    assert got == sorted(small) and RAW in got and len(got) == 5 + 2 + 2 * 2
    assert all((tmp_path / "nab" / rel).read_bytes() == (NAB / rel).read_bytes() for rel in got)
    assert verify_tree(tmp_path / "nab", ("numenta", "twitterADVec")) == []
    assert verify_tree(tmp_path / "nab", ("null",)) == [f"results/null/{rel[5:].replace('/', '/null_')}" for rel in SMALL]


@needs_nab_results("numenta", "twitterADVec")
def test_a_corrupted_raw_output_is_refused_and_nothing_appears(tmp_path: Path, small: tuple[str, ...]) -> None:
    served = tmp_path / "served"
    for rel in small:
        (served / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(NAB / rel, served / rel)
    body = bytearray((served / RAW).read_bytes())
    body[-3] ^= 0x01
    (served / RAW).write_bytes(bytes(body))
    out = tmp_path / "out"
    out.mkdir()
    with serve(served) as url, pytest.raises(InputError) as err:
        fetch_nab(out / "nab", base_url=url, detectors=("numenta", "twitterADVec"), jobs=2)
    msg = str(err.value)
    assert msg.startswith(f"{RAW}: SHA-256 mismatch") and "\n" not in msg
    assert list(out.iterdir()) == []  # neither the destination nor the temporary folder the rest landed in
    with serve(served) as url:  # the same files without that detector: the corpus alone is intact
        fetch_nab(out / "nab", base_url=url, detectors=("numenta",))
    assert verify_tree(out / "nab", ("numenta",)) == []


def test_detector_names(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`all`, `none`, NAB's names in any case; a bad name is one line, exit 2, before anything is downloaded."""
    assert parse_detectors("all") == tuple(results_manifest()) and parse_detectors(" None ") == ()
    assert parse_detectors("NUMENTA, twitteradvec,numenta") == ("numenta", "twitterADVec")
    from harness.cli import _parser

    assert parse_detectors(_parser().parse_args(["nab", "fetch", "d"]).detectors) == DEFAULT_DETECTORS
    with pytest.raises(InputError, match=r"^--detectors: unknown detector 'htm'; use all, none or some of ARTime,"):
        parse_detectors("numenta,htm")
    line = one_error_line(harness(cli_env, "nab", "fetch", tmp_path / "nab", "--detectors", "numenta,htm",
                                  "--base-url", "http://127.0.0.1:9/"))
    assert "--detectors: unknown detector 'htm'" in line and "twitterADVec" in line, line
    assert list(tmp_path.iterdir()) == []
