"""The monitoring contract: prediction intake, summaries, drift, feedback and realised metrics.

Inference hands every prediction record to :meth:`MonitoringService.record_predictions` in
batches. Summaries cover infrastructure (throughput, errors, latency, SLO), ML (prediction
distribution, confidence, drift against the version's reference profile) and business signals
(feedback: realised quality and cost) per model version, whichever process each module runs in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Protocol

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
from contracts.features import Expectation, Value
from contracts.inference import PredictionRecord

__all__ = [
    "MAX_SERIES_BUCKETS",
    "SIGNALS",
    "VERSION",
    "Alert",
    "AlertFired",
    "AlertResolved",
    "AlertSignal",
    "AlertState",
    "AlertTarget",
    "DeleteAlert",
    "DriftDetected",
    "DriftReport",
    "EstimatedMetrics",
    "EstimatedPoint",
    "ExpectationViolations",
    "FeatureDrift",
    "FeatureViolations",
    "Feedback",
    "FitExpectations",
    "FittedExpectations",
    "GetAlert",
    "GetDriftReport",
    "GetEstimatedMetrics",
    "GetExpectationViolations",
    "GetRealisedMetrics",
    "GetSeries",
    "GetSummary",
    "ListAlerts",
    "ListDriftReports",
    "MonitoringService",
    "PutAlert",
    "RealisedMetrics",
    "RealisedPoint",
    "RecordPredictions",
    "Recorded",
    "ReportPage",
    "RunDriftCheck",
    "Series",
    "SeriesPoint",
    "SubmitFeedback",
    "Summary",
]

VERSION = (1, 4)
"""Contract version ``(major, minor)``; remote calls refuse a different major.

1.1: numeric fields carry their bounds (versions, windows, limits, buckets, shares).
1.2: alert rules (``AlertFired`` / ``AlertResolved``), performance estimated without labels,
and the summary's realised and estimated quality.
1.3: time series of traffic, errors and latency (:meth:`MonitoringService.get_series`), per
model or per deployment.
1.4: data expectations fitted on a version's reference profile (``fit_expectations``) and the
violations served inputs bring (``get_expectation_violations``); alert rules over a deployment's
traffic or a feature view's freshness (``target``) and on expectation violations.
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
    realised: dict[str, float] = {}
    """Quality measured against the feedback given for the window's predictions."""
    estimated: dict[str, float] = {}
    """A classifier's quality estimated from its probabilities (see ``EstimatedMetrics``)."""


MAX_SERIES_BUCKETS = 200
"""The most steps a series is cut into."""


class GetSeries(msgspec.Struct, frozen=True, kw_only=True):
    """Per-step figures of ``model`` (all versions, or ``version``), or of every prediction
    served through ``deployment`` (both: the model's through that deployment), over the last
    ``window_s`` seconds cut into ``buckets`` equal steps, oldest first. One of ``model`` and
    ``deployment`` is needed."""

    model: str | None = None
    version: Version | None = None
    deployment: str | None = None
    window_s: Annotated[float, msgspec.Meta(gt=0, le=90 * 86400.0)] = 3600.0
    buckets: Annotated[int, msgspec.Meta(ge=1, le=MAX_SERIES_BUCKETS)] = 60


class SeriesPoint(msgspec.Struct, frozen=True, kw_only=True):
    """The records of ``[start, end)``: how many, how many failed (by error code), requests per
    second and latency quantiles in seconds (``None`` when the step had no request)."""

    start: datetime
    end: datetime
    requests: int
    errors: int
    qps: float
    error_rate: float
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_p99_s: float | None = None
    errors_by_code: dict[str, int] = {}


class Series(msgspec.Struct, frozen=True, kw_only=True):
    """Traffic, errors and latency step by step; ``step_s`` is each step's length."""

    model: str | None
    version: Version | None
    deployment: str | None
    window_s: float
    step_s: float
    points: list[SeriesPoint] = []


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


class GetEstimatedMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """A classifier's quality estimated from its served probabilities, before labels arrive,
    over ``window_s`` in ``buckets`` slices."""

    model: str
    version: Version | None = None
    window_s: Seconds = 86400.0
    buckets: PositiveCount = 1


class EstimatedPoint(msgspec.Struct, frozen=True, kw_only=True):
    """Estimated figures for predictions made in ``[start, end)``, each within
    ``[lower, upper]``."""

    start: datetime
    end: datetime
    count: int
    metrics: dict[str, float] = {}
    lower: dict[str, float] = {}
    upper: dict[str, float] = {}


class EstimatedMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Confidence-based performance estimation (CBPE): with calibrated probabilities the chance
    that a prediction is right is its probability, so the expected accuracy, F1 (macro beyond two
    classes) and, for a binary classifier, AUC follow without labels. ``lower`` and ``upper``
    bound each figure by three standard errors of what the labels, drawn from those
    probabilities, would give. ``calibration_error`` is the expected calibration error measured
    on the predictions that did get feedback (``calibration_rows`` of them); ``warnings`` say
    when it is too high for the estimate to be trusted, or unknown. Empty for a regressor.
    """

    model: str
    version: Version | None
    method: Literal["cbpe"] = "cbpe"
    count: int
    metrics: dict[str, float] = {}
    lower: dict[str, float] = {}
    upper: dict[str, float] = {}
    points: list[EstimatedPoint] = []
    calibration_error: float | None = None
    calibration_rows: int = 0
    warnings: list[str] = []


AlertSignal = Literal[
    "error_rate",
    "latency_p99_s",
    "slo_compliance",
    "prediction_volume",
    "drift_share",
    "realised_accuracy",
    "estimated_accuracy",
    "expectation_violations",
    "feature_freshness",
]
"""What an alert watches over its window: the share of failed predictions, the 99th percentile
latency in seconds, the share answered within the latency objective, the number of predictions,
the share of drifted columns in the newest drift report made in the window, accuracy against
feedback, accuracy estimated without labels (:class:`EstimatedMetrics`); since contract 1.4 the
number of served input values breaking the version's fitted expectations
(:class:`ExpectationViolations`; one ``feature``'s, or all), and a feature view's freshness: the
age in seconds of its newest row's event (``None`` while it has no rows)."""

SIGNALS: tuple[str, ...] = (
    "error_rate",
    "latency_p99_s",
    "slo_compliance",
    "prediction_volume",
    "drift_share",
    "realised_accuracy",
    "estimated_accuracy",
    "expectation_violations",
    "feature_freshness",
)
"""Every :data:`AlertSignal`."""

AlertTarget = Literal["model", "deployment", "view"]
"""What an alert rule's ``model`` field names: a registered model; a deployment (its signals
are computed over the predictions served through it); a feature view (``feature_freshness``)."""

AlertState = Literal["ok", "pending", "firing"]


class PutAlert(msgspec.Struct, frozen=True, kw_only=True):
    """Create or replace alert rule ``name``: it fires when ``signal`` of ``model`` (a registered
    model's name; one ``version`` or all) over the last ``window_s`` seconds is ``above`` or
    ``below`` ``threshold`` for ``for_s`` seconds on end. Replacing a rule starts it ``ok``.

    Since contract 1.4 ``target`` says what ``model`` names (:data:`AlertTarget`): a deployment
    takes the traffic signals (error rate, p99, SLO compliance, volume), a view only
    ``feature_freshness``. ``feature`` narrows ``expectation_violations`` to one input column.
    """

    name: str
    model: str
    signal: AlertSignal
    threshold: Finite
    comparison: Literal["above", "below"] = "above"
    window_s: Annotated[float, msgspec.Meta(gt=0, le=90 * 86400.0)] = 300.0
    for_s: Seconds = 0.0
    version: Version | None = None
    target: AlertTarget = "model"
    feature: str | None = None


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """An alert rule and where it stands: ``ok``; ``pending`` (the condition holds, not yet for
    ``for_s``); ``firing``. ``value`` is the signal at the last evaluation (``None``: no data,
    which never fires); ``since`` when the state began."""

    name: str
    model: str
    signal: AlertSignal
    threshold: float
    comparison: Literal["above", "below"]
    window_s: float
    for_s: float
    version: Version | None = None
    state: AlertState = "ok"
    value: float | None = None
    since: datetime | None = None
    evaluated_at: datetime | None = None
    target: AlertTarget = "model"
    feature: str | None = None


class GetAlert(msgspec.Struct, frozen=True, kw_only=True):
    """An alert rule by name."""

    name: str


class DeleteAlert(msgspec.Struct, frozen=True, kw_only=True):
    """Delete an alert rule by name."""

    name: str


class ListAlerts(msgspec.Struct, frozen=True, kw_only=True):
    """One page of alert rules, by name."""

    limit: Limit = 50
    cursor: str | None = None


class AlertFired(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An alert's condition held for its ``for_s``: it is firing."""

    name: str
    model: str
    signal: str
    comparison: str
    threshold: float
    value: float
    window_s: float
    version: Version | None = None
    target: AlertTarget = "model"
    feature: str | None = None


class AlertResolved(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A firing alert's condition no longer holds (``value`` ``None``: no data in the window)."""

    name: str
    model: str
    signal: str
    threshold: float
    value: float | None
    version: Version | None = None
    target: AlertTarget = "model"
    feature: str | None = None


class FitExpectations(msgspec.Struct, frozen=True, kw_only=True):
    """Fit data expectations on the reference profile of the version ``model`` (a reference)
    resolves to: a categorical column's seen categories (type ``int``), a numerical column's
    range widened by ``tolerance`` of its span on each side, and a null share ``null_tolerance``
    above the sample's. With ``view``, only columns named ``feature`` or ``view:feature`` are
    kept, named ``feature``: the body ``PUT /v1/features/views/{view}/expectations`` takes."""

    model: str
    view: str | None = None
    tolerance: Share = 0.1
    null_tolerance: Share = 0.05


class FittedExpectations(msgspec.Struct, frozen=True, kw_only=True):
    """Expectations fitted on ``model:version``'s profile (``fitted_from`` names it)."""

    model: str
    version: Version
    fitted_from: str
    expectations: list[Expectation] = []


class GetExpectationViolations(msgspec.Struct, frozen=True, kw_only=True):
    """Count the sampled served inputs of ``model`` (all versions, or ``version``) over the last
    ``window_s`` seconds that break the expectations fitted on their version's profile."""

    model: str
    version: Version | None = None
    window_s: Seconds = 3600.0


class FeatureViolations(msgspec.Struct, frozen=True, kw_only=True):
    """One version's input column: ``count`` values of ``rows`` broke its expectation, by kind
    (``category``: never seen in the profile; ``range``: outside the fitted range; ``null``: every
    missing value, when more are missing than the fitted null share allows)."""

    version: Version
    feature: str
    count: int
    rows: int
    kinds: dict[str, int] = {}


class ExpectationViolations(msgspec.Struct, frozen=True, kw_only=True):
    """Violations of fitted expectations in a window's sampled inputs: ``rows`` input rows were
    checked (versions without a reference profile are skipped), ``total`` values broke one;
    ``features`` lists every column with a violation, most first."""

    model: str
    version: Version | None
    window_s: float
    rows: int
    total: int
    features: list[FeatureViolations] = []


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

    @method(scope=Scope.READ, idempotent=True)
    async def get_series(self, request: GetSeries) -> Series:
        """Requests, errors by code and latency quantiles per step of a window, of a model or
        of a deployment; ``InvalidInput`` when neither is named."""
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

    @method(scope=Scope.READ, idempotent=True)
    async def get_estimated_metrics(self, request: GetEstimatedMetrics) -> EstimatedMetrics:
        """A classifier's accuracy, F1 and AUC estimated from its probabilities (CBPE)."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def fit_expectations(self, request: FitExpectations) -> FittedExpectations:
        """Expectations fitted on a version's training profile; ``NotFound`` without one."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_expectation_violations(
        self, request: GetExpectationViolations
    ) -> ExpectationViolations:
        """Served inputs breaking their version's fitted expectations, per version and feature."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def put_alert(self, request: PutAlert) -> Alert:
        """Create or replace an alert rule; ``InvalidInput`` for a model the registry does not
        know, a deployment no prediction was served through, a view the features module does
        not know, or a signal its target does not have."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_alert(self, request: GetAlert) -> Alert:
        """An alert rule with its state and last value; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_alerts(self, request: ListAlerts) -> Page[Alert]:
        """One page of alert rules, by name."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def delete_alert(self, request: DeleteAlert) -> Alert:
        """Delete an alert rule; answers what was deleted. ``NotFound`` if there is none."""
        ...
