"""The monitoring contract: prediction intake, summaries, drift, feedback and realised metrics.

Inference hands every prediction record to :meth:`MonitoringService.record_predictions` in
batches. Summaries cover infrastructure (throughput, errors, latency, SLO), ML (prediction
distribution, confidence, drift against the version's reference profile) and business signals
(feedback: realised quality and cost) per model version, whichever process each module runs in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

import msgspec

from contracts.common import (
    Count,
    Finite,
    Limit,
    Page,
    PositiveCount,
    Scope,
    Seconds,
    Share,
    Version,
    method,
)
from contracts.features import Value
from contracts.inference import PredictionRecord

__all__ = [
    "VERSION",
    "DriftDetected",
    "DriftReport",
    "FeatureDrift",
    "Feedback",
    "GetDriftReport",
    "GetRealisedMetrics",
    "GetSummary",
    "ListDriftReports",
    "MonitoringService",
    "RealisedMetrics",
    "RealisedPoint",
    "RecordPredictions",
    "Recorded",
    "ReportPage",
    "RunDriftCheck",
    "SubmitFeedback",
    "Summary",
]

VERSION = (1, 1)
"""Contract version ``(major, minor)``; remote calls refuse a different major.

1.1: numeric fields carry their bounds (versions, windows, limits, buckets, shares).
"""


class RecordPredictions(msgspec.Struct, frozen=True, kw_only=True):
    """A batch of prediction records (success or error) from inference."""

    records: list[PredictionRecord]


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """How many records were stored (a record already stored is not stored twice)."""

    accepted: Count


class GetSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Figures for ``model`` (all versions, or ``version``) over the last ``window_s`` seconds."""

    model: str
    version: Version | None = None
    window_s: Seconds = 300.0


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """Infrastructure and ML figures over a window.

    Latencies are in seconds; ``slo_compliance`` is the share of requests answered within
    ``slo_latency_s``. ``prediction_distribution``: for a classifier the share of each predicted
    class (by class index), for a regressor quantiles (``p10`` ... ``p90``) and ``mean`` of the
    prediction. ``mean_confidence``: a classifier's mean top probability.
    """

    model: str
    version: Version | None
    window_s: float
    requests: int
    errors: int
    qps: float
    error_rate: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    slo_latency_s: float
    slo_compliance: float | None
    prediction_distribution: dict[str, float] = {}
    mean_confidence: float | None = None
    errors_by_code: dict[str, int] = {}


class RunDriftCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Compare the logged inputs and predictions of a window with the reference profile.

    ``model`` is a reference (``name``, ``name:N``, ``name@alias``); ``psi`` adds the population
    stability index to each numerical column; ``share_threshold`` is the share of drifted columns
    that makes dataset drift; fewer than ``min_rows`` logged rows is insufficient data.
    """

    model: str
    window_s: Seconds = 3600.0
    psi: bool = False
    share_threshold: Share = 0.5
    min_rows: Count = 30


class FeatureDrift(msgspec.Struct, frozen=True, kw_only=True):
    """One column's test: its statistic (and p-value), the threshold and the verdict."""

    name: str
    kind: Literal["numerical", "categorical"]
    test: str
    statistic: float
    threshold: float
    drifted: bool
    p_value: float | None = None
    psi: float | None = None
    reference_rows: int = 0
    current_rows: int = 0


class DriftReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a drift check; ``status="insufficient_data"`` is never drift."""

    id: str
    model: str
    version: Version
    created_at: datetime
    window_s: float
    status: Literal["ok", "drift", "insufficient_data"]
    dataset_drift: bool
    share_drifted: float
    share_threshold: float
    features: list[FeatureDrift] = []
    prediction: FeatureDrift | None = None
    reference_rows: int = 0
    current_rows: int = 0
    message: str = ""


class ListDriftReports(msgspec.Struct, frozen=True, kw_only=True):
    """One page of ``model``'s drift reports, newest first."""

    model: str
    limit: Limit = 50
    cursor: str | None = None


class GetDriftReport(msgspec.Struct, frozen=True, kw_only=True):
    """A drift report by id."""

    id: str


class ReportPage(msgspec.Struct, frozen=True, kw_only=True):
    """A drift report as a self-contained HTML page (charts inline, nothing fetched)."""

    id: str
    html: str


class SubmitFeedback(msgspec.Struct, frozen=True, kw_only=True):
    """Ground truth (``label``: the true class or value) and/or a business ``value`` (e.g. revenue)
    for a prediction inference issued. Feedback is given once per prediction."""

    prediction_id: str
    label: Value = None
    value: Finite | None = None


class Feedback(msgspec.Struct, frozen=True, kw_only=True):
    """Stored feedback, joined to its prediction's model version."""

    prediction_id: str
    model: str
    version: Version | None
    label: Value = None
    value: float | None = None
    at: datetime


class GetRealisedMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Quality measured against feedback, per version, over ``window_s`` in ``buckets`` slices."""

    model: str
    version: Version | None = None
    window_s: Seconds = 86400.0
    buckets: PositiveCount = 1


class RealisedPoint(msgspec.Struct, frozen=True, kw_only=True):
    """Realised figures for predictions made in ``[start, end)``."""

    start: datetime
    end: datetime
    count: int
    metrics: dict[str, float] = {}
    cost: float | None = None
    value: float | None = None


class RealisedMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Realised quality over the window and per slice.

    A classifier gets accuracy and F1 (macro over classes beyond two), and a binary one also
    AUC and the confusion counts; a regressor RMSE, MAE and R2. ``cost`` applies the
    configured cost matrix to false positives and negatives (binary classifiers); ``value``
    sums the business values fed back.
    """

    model: str
    version: Version | None
    task: Literal["classification", "regression"] | None
    count: int
    metrics: dict[str, float] = {}
    cost: float | None = None
    value: float | None = None
    points: list[RealisedPoint] = []


class DriftDetected(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A drift check found dataset drift for a model version."""

    model: str
    version: Version
    report_id: str
    share_drifted: float
    features: list[str]


class MonitoringService(Protocol):
    """Latency, errors, drift, feedback and business metrics per model version."""

    @method(scope=Scope.PREDICT, idempotent=True)
    async def record_predictions(self, request: RecordPredictions) -> Recorded:
        """Store a batch of records (by prediction id: a batch sent twice is stored once)."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_summary(self, request: GetSummary) -> Summary:
        """Throughput, errors, latency, SLO and prediction figures over a window."""
        ...

    @method(scope=Scope.READ)
    async def run_drift_check(self, request: RunDriftCheck) -> DriftReport:
        """Run and store a drift check; ``NotFound`` when the version has no reference profile."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_drift_reports(self, request: ListDriftReports) -> Page[DriftReport]:
        """One page of a model's drift reports, newest first."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_drift_report(self, request: GetDriftReport) -> DriftReport:
        """A drift report; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def render_drift_report(self, request: GetDriftReport) -> ReportPage:
        """The report as HTML: each column's reference vs current distribution, latency and
        error rate over the report's window."""
        ...

    @method(scope=Scope.PREDICT, idempotent=True)
    async def submit_feedback(self, request: SubmitFeedback) -> Feedback:
        """Attach feedback; ``NotFound`` for an unknown prediction, ``Conflict`` for a repeat."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_realised_metrics(self, request: GetRealisedMetrics) -> RealisedMetrics:
        """Realised quality, cost and value from feedback."""
        ...
