"""The monitoring module's own settings: ``QUARRY_MONITORING_*``, or ``[monitoring]`` in
``quarry.toml``."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["MonitoringSettings"]


class MonitoringSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How monitoring judges latency and cost, how long it keeps prediction records, and how
    often it runs its schedules."""

    slo_ms: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    """QUARRY_MONITORING_SLO_MS: the latency objective SLO compliance is measured against."""
    retention_s: Annotated[float, msgspec.Meta(gt=0)] = 30 * 86400.0
    """QUARRY_MONITORING_RETENTION_S: prediction records older than this are pruned."""
    drift_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    """QUARRY_MONITORING_DRIFT_INTERVAL_S: how often scheduled drift checks run (0 = never)."""
    cost_fp: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """QUARRY_MONITORING_COST_FP: the cost of one false positive (binary classifiers)."""
    cost_fn: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    """QUARRY_MONITORING_COST_FN: the cost of one false negative (binary classifiers)."""
    alert_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """QUARRY_MONITORING_ALERT_INTERVAL_S: how often alert rules are evaluated (0 = never)."""
    calibration_error_max: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.1
    """QUARRY_MONITORING_CALIBRATION_ERROR_MAX: the expected calibration error, on labelled
    predictions, above which estimated performance carries a warning."""
