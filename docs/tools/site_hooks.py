"""MkDocs hook: the site is built from the repository's Markdown as it is, so there is one source of truth.

README.md becomes the home page, docs/X.md the page X.md, and the READMEs under clusters/ and serve/ their own
pages. Every page keeps the links that work on GitHub (relative to its place in the repository); this hook maps
them to the site's paths, and copies a linked repository file that is not a page (a cluster config) as is. A link
to nothing stays as written, so that `mkdocs build --strict` reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

# repository Markdown outside docs/ that the site shows as pages
EXTRA_PAGES = ("README.md", "serve/README.md", "clusters/README.md", "clusters/edge/README.md",
               "clusters/kuberay/README.md", "clusters/monitoring/README.md")
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
_site_of: dict[str, str] = {}  # repository path -> site path, for every page and copied file
_repo_of: dict[str, str] = {}  # site path of a page -> its repository path


def site_path(repo_path: str) -> str:
    """Where a repository file lives in the site: docs/ is the root; a README is its folder's index."""
    path = repo_path[len("docs/"):] if repo_path.startswith("docs/") else repo_path
    return posixpath.join(posixpath.dirname(path), "index.md") if posixpath.basename(path) == "README.md" else path


def _links(text: str) -> list[str]:
    return [m.group(2) for m in LINK.finditer(text) if "://" not in m.group(2) and not m.group(2).startswith("mailto:")]


def on_files(files: Files, config) -> Files:
    repo = Path(config.config_file_path).parent
    _site_of.clear()
    _repo_of.clear()
    for f in list(files):
        _site_of["docs/" + f.src_uri] = f.src_uri
        _repo_of[f.src_uri] = "docs/" + f.src_uri
    for repo_path in EXTRA_PAGES:
        uri = site_path(repo_path)
        files.append(File.generated(config, uri, abs_src_path=str(repo / repo_path)))
        _site_of[repo_path], _repo_of[uri] = uri, repo_path
    for uri, repo_path in list(_repo_of.items()):  # repository files that pages link to, copied as they are
        if not uri.endswith(".md"):
            continue
        for target in _links((repo / repo_path).read_text()):
            linked = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), target))
            if linked not in _site_of and not linked.startswith("..") and (repo / linked).is_file() \
                    and not linked.endswith(".md"):
                files.append(File.generated(config, linked, abs_src_path=str(repo / linked)))
                _site_of[linked] = linked
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    repo_path = _repo_of.get(page.file.src_uri)
    if repo_path is None:
        return markdown

    def relink(m: re.Match) -> str:
        target = m.group(2)
        if "://" in target or target.startswith("mailto:"):
            return m.group(0)
        linked = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), target))
        if linked not in _site_of:
            return m.group(0)
        new = posixpath.relpath(_site_of[linked], posixpath.dirname(page.file.src_uri) or ".")
        return f"{m.group(1)}{new}{m.group(3) or ''}{m.group(4)}"

    return LINK.sub(relink, markdown)
