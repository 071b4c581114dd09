"""Threshold policies: what turns a detector's scores into alerts, applied causally (the alert at record i
depends on scores <= i only), the cross-validated NAB score (`crossval`: thresholds chosen on other
categories) and the policies judged by NAB (`evaluate`); a scenario lists them under `scoring.policies`."""

from harness.thresholds.policies import (
    POLICIES,
    Fixed,
    RollingQuantile,
    Spot,
    ThresholdPolicy,
)

__all__ = ["POLICIES", "Fixed", "RollingQuantile", "Spot", "ThresholdPolicy"]
