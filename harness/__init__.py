"""Ray-distributed benchmarking harness for streaming anomaly detectors."""

__version__ = "0.1.0"
