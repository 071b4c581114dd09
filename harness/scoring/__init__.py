"""Scoring: NAB v1.1 exactly, plus window-level precision/recall/F1, latency and false-positive events."""
