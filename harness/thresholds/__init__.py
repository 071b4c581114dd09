"""Threshold policies: what turns a detector's scores into alerts, applied causally (the alert at record i
depends on scores <= i only), and the cross-validated NAB score (`crossval`: thresholds chosen on other
categories). Not yet a scenario axis: issue 11 wires them in."""

from harness.thresholds.policies import POLICIES, Fixed, RollingQuantile, Spot, ThresholdPolicy, make_policy

__all__ = ["POLICIES", "Fixed", "RollingQuantile", "Spot", "ThresholdPolicy", "make_policy"]
