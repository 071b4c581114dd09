"""Detectors by scenario `type`: a built-in name, or `package.module:Class` for a user's own detector."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.detectors.autoencoder import DenseAutoencoder
from harness.detectors.base import Stream, StreamingDetector
from harness.detectors.ensemble import Ensemble
from harness.detectors.baselines import NullDetector, RandomDetector, WindowedGaussian
from harness.detectors.lstm import LSTMForecaster


# Importing the learned detectors is light: they import torch only when a model is built.
DETECTORS: dict[str, type[StreamingDetector]] = {
    "null": NullDetector,
    "random": RandomDetector,
    "windowedGaussian": WindowedGaussian,
    "lstm": LSTMForecaster,
    "autoencoder": DenseAutoencoder,
    "ensemble": Ensemble,
}


def resolve_detector(kind: str) -> type[StreamingDetector]:
    """The class for a scenario `type`; ValueError (with what was expected) when there is none."""
    if kind in DETECTORS:
        return DETECTORS[kind]
    if ":" not in kind:
        raise ValueError(
            f"unknown detector {kind!r} (expected one of {', '.join(sorted(DETECTORS))}, or package.module:Class)"
        )
    module_name, _, attr = kind.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - any import failure is the scenario's error (bad path, broken module)
        raise ValueError(f"cannot import detector {kind!r} ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, StreamingDetector)):
        raise ValueError(f"{kind!r} is not a subclass of harness.detectors.StreamingDetector")
    return cls


def user_code_path(kind: str) -> Path | None:
    """The folder of a user's detector package, which the runner ships to Ray workers; None for built-ins
    and for packages installed in site-packages (assumed present on every node)."""
    if ":" not in kind:
        return None
    spec = importlib.util.find_spec(kind.partition(":")[0].split(".")[0])
    if spec is None or not spec.submodule_search_locations:
        return None  # a single-file module cannot be shipped: it must be installed on the nodes
    folder = Path(next(iter(spec.submodule_search_locations)))
    if any(part in ("site-packages", "dist-packages") for part in folder.parts):
        return None
    return folder


def build_detector(kind: str, params: Mapping[str, Any], backend: Any = None, pruning: Any = None,
                   cache_dir: str | None = None) -> StreamingDetector:
    """A fresh detector of a cell or a served variant: its type with its parameters, its model run on `backend`
    (a runtime spec or its dict; artefacts cached in `cache_dir`, default the model cache) and pruned after
    training as `pruning` says. The one place a scenario's detector is built, so a cell scores and a service
    serves the same detector."""
    detector = resolve_detector(kind)(**params)
    if backend is not None:
        detector.use_backend(backend, cache_dir)
    if pruning is not None:
        detector.use_pruning(pruning)
    return detector


def default_label(kind: str) -> str:
    """Cell label for a detector type: the name itself, or the class name of an import path."""
    return kind.rpartition(":")[2]


__all__ = ["DETECTORS", "Stream", "StreamingDetector", "build_detector", "resolve_detector", "default_label", "user_code_path"]
