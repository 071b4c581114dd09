"""Regenerate harness/corpus/nab_results.json: the SHA-256 and size of every published detector's raw outputs.

Run against a clone of NAB (a bare one is enough: it reads blobs with git, never a work tree):

    python tools/nab_results_manifest.py /path/to/NAB.git > harness/corpus/nab_results.json

Why a manifest of hashes rather than a list of URLs: `harness nab fetch` refuses any byte that differs from what
our published numbers were measured on. Why hashes only, in the data files' order: every detector has exactly one
raw output per data file, at `results/<det>/<category>/<det>_<name>`, so the paths are implied and the file stays
small (16 detectors x 58 hashes). NAB's per-profile `<det>_*_scores.csv` are left out: they are the output of
NAB's scorer at its published thresholds, which nothing here reads (the harness scores the raw outputs itself).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
from harness.corpus.fetch import MANIFEST as MAIN_MANIFEST, raw_output_path


def git(repo: str, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", repo, *args], input=data, capture_output=True, check=True).stdout


def blobs(repo: str, commit: str) -> dict[str, tuple[str, int]]:
    """{path under results/: (blob id, size)} at `commit`."""
    out = {}
    for line in git(repo, "ls-tree", "-r", "-l", commit, "results").decode().splitlines():
        meta, path = line.split("\t", 1)
        _, kind, oid, size = meta.split()
        if kind == "blob":
            out[path] = (oid, int(size))
    return out


def sha256_of_blobs(repo: str, oids: list[str]) -> list[str]:
    """SHA-256 of each blob's content, read in one `git cat-file --batch`."""
    raw = git(repo, "cat-file", "--batch", data="".join(o + "\n" for o in oids).encode())
    hashes, pos = [], 0
    for oid in oids:
        header_end = raw.index(b"\n", pos)
        got_oid, _, size = raw[pos:header_end].decode().split()
        assert got_oid == oid, (got_oid, oid)
        start = header_end + 1
        hashes.append(hashlib.sha256(raw[start:start + int(size)]).hexdigest())
        pos = start + int(size) + 1  # the content is followed by a newline
    return hashes


def build(repo: str) -> dict:
    main = json.loads(MAIN_MANIFEST.read_text(encoding="utf-8"))
    commit = main["commit"]
    data_files = sorted(rel for rel in main["files"] if rel.startswith("data/"))
    tree = blobs(repo, commit)
    names = sorted({p.split("/")[1] for p in tree if p.count("/") >= 3}, key=str.lower)
    detectors = {}
    for det in names:
        paths = [raw_output_path(det, rel) for rel in data_files]
        extra = {p for p in tree if p.startswith(f"results/{det}/") and p.count("/") == 3} - set(paths)
        missing = [p for p in paths if p not in tree]
        if missing or extra:
            sys.exit(f"{det}: not in NAB's results layout (missing {missing[:3]}, unexpected {sorted(extra)[:3]})")
        detectors[det] = {"bytes": sum(tree[p][1] for p in paths),
                          "sha256": sha256_of_blobs(repo, [tree[p][0] for p in paths])}
    return {
        "commit": commit,
        "layout": "results/{detector}/{category}/{detector}_{name}, one per data/{category}/{name} of "
                  "nab_files.json in sorted order; hashes in that order",
        "regenerate": "python tools/nab_results_manifest.py NAB_GIT_DIR > harness/corpus/nab_results.json",
        "detectors": detectors,
    }


def dump(manifest: dict) -> str:
    """JSON with one hash per line: diffs stay readable when NAB is re-pinned."""
    return json.dumps(manifest, indent=1) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.stdout.write(dump(build(sys.argv[1])))
