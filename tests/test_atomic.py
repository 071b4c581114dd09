"""File modes under a real umask: what a run publishes (its folder, tables, the corpus it materialises) follows the
umask as `open()` and `mkdir()` would; what holds a secret (a cluster's state with its token, a private Ray's
token) is 0600 whatever the umask. In process, a few files: well under a second."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from harness.atomic import umask, write_bytes, write_text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def set_umask():
    """Set the process's umask for the test; the one before is restored after."""
    before = os.umask(0o022)
    yield os.umask
    os.umask(before)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_published_files_and_folders_follow_the_umask(mask: int, set_umask, tmp_path: Path) -> None:
    from harness.corpus.synthetic import write_corpus
    from harness.results.folder import RunFolder

    set_umask(mask)
    assert umask() == mask  # read without being changed
    folder = RunFolder(tmp_path / "run")
    folder.check_new()
    folder.write_table("cell\nx\n", "| cell |\n|---|\n| x |\n")
    write_bytes(tmp_path / "run" / "cells" / "x" / "deep" / "result.json", b"{}")
    corpus = write_corpus(tmp_path / "corpus", 1, 500)
    files = [tmp_path / "run" / "table.csv", tmp_path / "run" / "table.md", tmp_path / "run" / "cells" / "x" / "deep" / "result.json",
             next(corpus.rglob("*.csv"))]
    folders = [tmp_path / "run", tmp_path / "run" / "cells" / "x" / "deep", corpus, next(p for p in corpus.rglob("*") if p.is_dir())]
    assert {f.name: oct(mode(f)) for f in files} == {f.name: oct(0o666 & ~mask) for f in files}
    assert {str(d): oct(mode(d)) for d in folders} == {str(d): oct(0o777 & ~mask) for d in folders}
    assert not list((tmp_path / "run").glob(".*.tmp"))  # the temporary files were renamed, none left


def test_secrets_are_0600_whatever_the_umask(set_umask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.execution.runner import private_token
    from harness.topology import NodeState, TopologyState
    from harness.topology.state import save_state

    set_umask(0o000)  # the most open umask: everything else here would be 0666 / 0777
    write_text(tmp_path / "plain", "x")
    assert mode(tmp_path / "plain") == 0o666
    write_text(tmp_path / "secret", "x", private=True)
    assert mode(tmp_path / "secret") == 0o600

    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "clusters"))
    state = TopologyState(name="t", file="t.yaml", method="relay", hub="t-hub", head_address="10.9.0.2:6379",
                          auth="token", token="a" * 64, temp_root=str(tmp_path / "rt"), service_ports=[8000],
                          nodes=[NodeState(name="head", namespace="t-head", ip="10.9.0.2", labels={}, cpus=1, head=True)])
    saved = save_state(state)
    assert mode(saved) == 0o600 and mode(saved.parent) == 0o700

    for name in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)  # private_token sets them; monkeypatch restores them after
    folder = Path(private_token())
    try:
        assert mode(folder / "token") == 0o600 and mode(folder) == 0o700
    finally:
        shutil.rmtree(folder)
