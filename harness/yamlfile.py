"""Reading a YAML input file (a scenario, a topology): its text and its top-level mapping, or one clear
InputError line naming the file."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.errors import InputError, kind_of


def read_yaml_mapping(path: str | Path) -> tuple[dict, str]:
    """The file's text and its top-level mapping, or one clear InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError("file does not exist", path)
    if not path.is_file():
        raise InputError("expected a YAML file, got a folder", path)
    raw = path.read_bytes()
    if b"\0" in raw:
        raise InputError("expected a YAML text file, got binary data", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("expected a UTF-8 YAML text file, got binary data", path) from None
    if not text.strip():
        raise InputError("file is empty; expected a scenario mapping (name, corpus, detectors)", path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"invalid YAML{where}: {problem}", path) from None
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping at the top level, got {kind_of(data)}", path)
    return data, text
