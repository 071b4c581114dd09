"""NAB's cost profiles and published thresholds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InputError

REFERENCE_PROFILE = "standard"  # the table's detection metrics and threshold are read at this profile's threshold


@dataclass(frozen=True)
class Profile:
    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


# The table's detection metrics and threshold are read at this profile's threshold (harness.plan checks a run has it).
REFERENCE_PROFILE = "standard"

# NAB v1.1 config/profiles.json (facts, used when a corpus carries no profiles file of its own).
NAB_PROFILES: tuple[Profile, ...] = (
    Profile(REFERENCE_PROFILE, 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def load_profiles(path: str | Path | None) -> tuple[Profile, ...]:
    """Profiles from a NAB `config/profiles.json`, or NAB's own three when there is none."""
    if path is None or not Path(path).is_file():
        return NAB_PROFILES
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise InputError("expected at least one profile: {profile: {CostMatrix: {tpWeight, fpWeight, fnWeight}}}", path)
    try:
        return tuple(
            Profile(
                name,
                float(p["CostMatrix"]["tpWeight"]),
                float(p["CostMatrix"]["fpWeight"]),
                float(p["CostMatrix"]["fnWeight"]),
            )
            for name, p in data.items()
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError("expected {profile: {CostMatrix: {tpWeight, fpWeight, fnWeight}}}", path) from None


def load_thresholds(path: str | Path, detector: str, profiles: tuple[Profile, ...]) -> dict[str, float]:
    """One detector's thresholds from a file in NAB's `config/thresholds.json` format."""
    data = _read_json(path)
    if not isinstance(data, dict) or detector not in data:
        raise InputError(f"no thresholds for detector {detector!r}", path)
    out = {}
    for p in profiles:
        try:
            out[p.name] = float(data[detector][p.name]["threshold"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"expected a number at {detector}.{p.name}.threshold", path) from None
    return out


def _read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise InputError("file does not exist", path)
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"expected JSON ({exc})", path) from None
