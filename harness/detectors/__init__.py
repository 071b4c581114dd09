"""Detector registry: scenario `type` -> class."""

from harness.detectors.base import StreamingDetector
from harness.detectors.baselines import NullDetector, RandomDetector, WindowedGaussian

DETECTORS: dict[str, type[StreamingDetector]] = {
    "null": NullDetector,
    "random": RandomDetector,
    "windowedGaussian": WindowedGaussian,
}

__all__ = ["DETECTORS", "StreamingDetector"]
