"""The scenarios shipped inside the package, so that `harness run cloud-vs-edge` works where only the package is
installed (a container image, a cluster node). They are the checkout's `scenarios/` folder itself: `harness/scenarios`
is a symlink to it, which the wheel's package data follows, so there is one source of truth and no copy to keep
in step."""

from __future__ import annotations

from pathlib import Path

from harness.errors import InputError

SUFFIX = ".yaml"


def folder() -> Path:
    """Where the shipped scenarios are: inside the installed package (a wheel), or the checkout's `scenarios/`
    through the package's symlink (an editable install, PYTHONPATH)."""
    return Path(__file__).resolve().parent / "scenarios"


def names() -> list[str]:
    """Every shipped scenario's name (its file name without .yaml), sorted."""
    d = folder()
    return sorted(p.name.removesuffix(SUFFIX) for p in d.glob(f"*{SUFFIX}")) if d.is_dir() else []


def path_of(name: str, field: str = "NAME") -> Path:
    """The shipped scenario `name` (with or without .yaml), or one InputError line listing those there are."""
    stem = name.removesuffix(SUFFIX)
    p = folder() / f"{stem}{SUFFIX}"
    if "/" in stem or not stem or not p.is_file():
        raise InputError(f"no shipped scenario {name!r} (shipped: {', '.join(names()) or 'none'})", field=field)
    return p


def resolve(scenario: str | Path) -> Path:
    """A scenario argument as a file: the path when it exists, else a shipped scenario of that name (`cloud-vs-edge`
    or `cloud-vs-edge.yaml`); anything else is returned as given, for the loader's own "no such file" line."""
    p = Path(scenario)
    if p.exists() or len(p.parts) != 1:
        return p
    candidate = folder() / f"{p.name.removesuffix(SUFFIX)}{SUFFIX}"
    return candidate if candidate.is_file() else p


def description(path: Path) -> str:
    """A shipped scenario's `description:`, else the first sentence of its leading comment (one line), read
    without validating the whole file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError):
        return ""
    found = data.get("description", "") if isinstance(data, dict) else ""
    if not found:
        lead = [line.lstrip("# ").rstrip() for line in text.splitlines()[:4] if line.startswith("#")]
        found = " ".join(lead).split(". ")[0].split(": ")[0]
    return " ".join(str(found).split())


def copy(name: str, dest: str | Path) -> Path:
    """Write shipped scenario `name` to `dest` (a file, or an existing folder to put NAME.yaml in), never over an
    existing file; returns where it went. Relative paths inside it (a corpus at ../data/nab) then resolve from there."""
    from harness import atomic

    source = path_of(name)
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise InputError(f"{target} exists: choose another destination (nothing was written)", field="DEST")
    if not target.parent.is_dir():
        raise InputError(f"no folder {target.parent} to write {target.name} in", field="DEST")
    atomic.write_text(target, source.read_text(encoding="utf-8"))
    return target
