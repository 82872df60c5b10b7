"""``LocalMonitoringService``: prediction records in the module's database, figures on demand.

Drift checks compare a window's sampled inputs (and outputs) of one version with the reference
profile training registered with it; a check that finds dataset drift publishes
``DriftDetected`` in the transaction that stores its report. A schedule checks every version
with recent sampled inputs; another loop prunes records past the retention period. Each of the
two runs in one replica at a time (:mod:`app.kernel.singleton`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from app.kernel import singleton
from app.kernel.cursors import decode_cursor, encode_cursor
from app.modules.monitoring import cbpe, drift, figures, store
from app.modules.monitoring.alert_targets import AlertTargets
from app.modules.monitoring.alerts import Alerts
from app.modules.monitoring.input_checks import InputChecks
from app.modules.monitoring.live import LiveFigures
from app.modules.monitoring.profiles import reference_profile
from app.modules.monitoring.report_html import render
from app.modules.monitoring.series import read_series
from contracts.common import Conflict, InvalidInput, NotFound, Page, validate_name
from contracts.features import FeaturesService
from contracts.monitoring import (
    Alert,
    DeleteAlert,
    DriftDetected,
    DriftReport,
    EstimatedMetrics,
    EstimatedPoint,
    ExpectationViolations,
    Feedback,
    FitExpectations,
    FittedExpectations,
    GetAlert,
    GetDriftReport,
    GetEstimatedMetrics,
    GetExpectationViolations,
    GetRealisedMetrics,
    GetSeries,
    GetSummary,
    ListAlerts,
    ListDriftReports,
    PutAlert,
    RealisedMetrics,
    RealisedPoint,
    Recorded,
    RecordPredictions,
    ReportPage,
    RunDriftCheck,
    Series,
    SubmitFeedback,
    Summary,
)
from contracts.registry import GetVersion, ReferenceProfile, RegistryService

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events import Outbox
    from app.kernel.settings import Settings
    from app.modules.monitoring.settings import MonitoringSettings

__all__ = ["LocalMonitoringService"]

MAX_WINDOW_S = 90 * 86400.0
MAX_BUCKETS = 200
"""The most slices a realised-metrics window is cut into."""
MAX_LIST = 200
"""The largest page of drift reports."""
SERIES_BUCKETS = 20
_TRAFFIC_SIGNALS = {
    "error_rate": "error_rate",
    "latency_p99_s": "latency_p99_s",
    "slo_compliance": "slo_compliance",
    "prediction_volume": "requests",
}
"""Alert signals read from the window's records, and their key in the latency figures."""
CALIBRATION_ROWS = 100
"""The fewest labelled predictions the calibration check of an estimate needs."""
CALIBRATION_LIMIT = 5000
"""The most recent labelled predictions the calibration check reads."""


class LocalMonitoringService:
    """See :class:`contracts.monitoring.MonitoringService`."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        registry: RegistryService,
        settings: Settings,
        config: MonitoringSettings,
        logger: logging.Logger,
        features: FeaturesService | None = None,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._registry = registry
        self._settings = settings
        self._config = config
        self._log = logger
        self._slo_s = config.slo_ms / 1000
        self.live = LiveFigures(slo_s=self._slo_s)
        self._loops: list[asyncio.Task[None]] = []
        self._versions: dict[tuple[str, int], tuple[figures.Task | None, list[str] | None]] = {}
        self.inputs = InputChecks(db=db, registry=registry)
        self._targets = AlertTargets(
            db=db, features=features, inputs=self.inputs, slo_s=self._slo_s
        )
        self.alerts = Alerts(
            db=db,
            outbox=outbox,
            registry=registry,
            measure=self._measure,
            targets=self._targets,
            logger=logger,
        )

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the drift schedule, the alert evaluation and the retention loop."""
        self.live.register()
        if self._config.drift_interval_s > 0:
            self._singleton("drift_schedule", self._drift_round, self._drift_interval_s)
        if self._config.alert_interval_s > 0:
            self._singleton("alerts", self._alert_round, self._config.alert_interval_s)
        self._singleton("retention", self._retention_round, self._retention_interval_s)

    def _singleton(self, loop: str, body: Callable[[], Awaitable[None]], interval_s: float) -> None:
        """Run ``body`` every ``interval_s`` in the one replica leading ``monitoring.<loop>``."""
        name = f"monitoring.{loop}"
        held = singleton.lease(name, db=self._db, settings=self._settings)
        run = singleton.run_as_singleton(held, body, interval_s=interval_s, logger=self._log)
        self._loops.append(asyncio.create_task(run, name=name))

    async def close(self) -> None:
        """Stop the loops."""
        for task in self._loops:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.live.unregister()

    @property
    def _drift_interval_s(self) -> float:
        return self._config.drift_interval_s

    @property
    def _retention_interval_s(self) -> float:
        return min(3600.0, self._config.retention_s / 10)

    async def _drift_round(self) -> None:
        interval = self._drift_interval_s
        pairs = await self._db.read(lambda c: store.recent_versions(c, time.time() - interval))
        for model, version in pairs:
            try:
                await self.run_drift_check(
                    RunDriftCheck(model=f"{model}:{version}", window_s=interval)
                )
            except NotFound:
                continue  # no reference profile: nothing to compare with
            except Exception:
                self._log.warning(
                    "scheduled drift check of %s:%s failed", model, version, exc_info=True
                )

    async def _alert_round(self) -> None:
        await self.evaluate_alerts(now=time.time())

    async def _retention_round(self) -> None:
        before = time.time() - self._config.retention_s
        pruned = await self._db.write(lambda c: store.prune(c, before))
        if pruned:
            self._log.info("pruned %d prediction records past retention", pruned)

    # --- intake -----------------------------------------------------------------------------

    async def record_predictions(self, request: RecordPredictions) -> Recorded:
        accepted = await self._db.write(lambda c: store.insert_records(c, request.records))
        self.live.add(request.records)
        return Recorded(accepted=accepted)

    # --- summary ----------------------------------------------------------------------------

    async def get_summary(self, request: GetSummary) -> Summary:
        validate_name(request.model, what="model name")
        window = _window(request.window_s)
        now = time.time()
        since = now - window
        rows = await self._db.read(
            lambda c: store.latencies(c, request.model, request.version, since, now)
        )
        done = await self._db.read(
            lambda c: store.logged(c, request.model, request.version, since, now, limit=5000)
        )
        latency = figures.latency_figures([r[1] for r in rows], [r[2] for r in rows], self._slo_s)
        first = next((d for d in done if d.outputs), None)
        task = (
            figures.task_of(
                first.outputs, (await self._version_of(request.model, first.version))[0]
            )
            if first is not None
            else None
        )
        distribution, confidence = (
            figures.prediction_distribution(task, [d.outputs for d in done if d.outputs])
            if task
            else ({}, None)
        )
        served = [d for d in done if d.outputs]
        probabilities = _probabilities(served) if task == "classification" and served else None
        estimated = (
            cbpe.estimate(probabilities)[0]
            if probabilities is not None and cbpe.are_probabilities(probabilities)
            else {}
        )
        labelled = await self._db.read(
            lambda c: store.feedback_for(c, request.model, request.version, since, now)
        )
        realised = (await self._realised(request.model, task, labelled))[0] if task else {}
        return Summary(
            realised=realised,
            estimated=estimated,
            model=request.model,
            version=request.version,
            window_s=window,
            qps=latency["requests"] / window,
            slo_latency_s=self._slo_s,
            slo_compliance=latency.pop("slo_compliance", None),
            prediction_distribution=distribution,
            mean_confidence=confidence,
            latency_p50_s=latency.pop("latency_p50_s", None),
            latency_p95_s=latency.pop("latency_p95_s", None),
            latency_p99_s=latency.pop("latency_p99_s", None),
            **latency,
        )

    async def get_series(self, request: GetSeries) -> Series:
        return await read_series(self._db, request)

    # --- drift ------------------------------------------------------------------------------

    async def _profile(self, ref: str) -> tuple[str, int, ReferenceProfile]:
        return await reference_profile(
            self._registry,
            ref,
            needed_for="drift is measured against the training data profile a training job"
            " registers with the version",
        )

    async def _current(
        self, model: str, version: int, columns: int, since: float, until: float
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        done = await self._db.read(
            lambda c: store.logged(c, model, version, since, until, with_inputs=True)
        )
        rows: list[np.ndarray] = []
        outputs: dict[str, list[np.ndarray]] = {}
        for item in done:
            if not item.inputs:
                continue
            x = np.asarray(next(iter(item.inputs.values())).to_numpy(), dtype=np.float64)
            if x.ndim != 2 or x.shape[1] != columns:
                continue
            rows.append(x)
            for name, tensor in item.outputs.items():
                outputs.setdefault(name, []).append(np.asarray(tensor.to_numpy()))
        current = np.concatenate(rows) if rows else np.empty((0, columns))
        return current, {k: np.concatenate(v) for k, v in outputs.items()}

    async def run_drift_check(self, request: RunDriftCheck) -> DriftReport:
        if not 0 < request.share_threshold <= 1:
            raise InvalidInput("share_threshold must be in (0, 1]")
        if request.min_rows < 1:
            raise InvalidInput("min_rows must be at least 1")
        window = _window(request.window_s)
        model, version, profile = await self._profile(request.model)
        now = time.time()
        reference = np.asarray(profile.sample.to_numpy(), dtype=np.float64)
        current, outputs = await self._current(
            model, version, len(profile.columns), now - window, now
        )
        fields: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "model": model,
            "version": version,
            "created_at": datetime.fromtimestamp(now, tz=UTC),
            "window_s": window,
            "share_threshold": request.share_threshold,
            "reference_rows": len(reference),
            "current_rows": len(current),
        }
        if len(current) < request.min_rows or len(reference) < request.min_rows:
            report = DriftReport(
                **fields,
                status="insufficient_data",
                dataset_drift=False,
                share_drifted=0.0,
                message=f"{len(current)} logged input rows in the window and {len(reference)}"
                f" reference rows; at least {request.min_rows} of each are needed",
            )
        else:
            kinds = {p.name: p.kind for p in profile.profiles}
            columns = profile.columns
            features, share, drifted = drift.dataset_drift(
                reference,
                current,
                columns,
                [kinds.get(c, "numerical") for c in columns],
                psi=request.psi,
                share_threshold=request.share_threshold,
            )
            task = (await self._version_of(model, version))[0] or profile.task
            reference_outputs = figures.drift_outputs(
                task, {k: np.asarray(t.to_numpy()) for k, t in profile.predictions.items()}
            )
            prediction = drift.prediction_drift(
                reference_outputs, figures.drift_outputs(task, outputs), psi=request.psi
            )
            report = DriftReport(
                **fields,
                status="drift" if drifted else "ok",
                dataset_drift=drifted,
                share_drifted=share,
                features=features,
                prediction=prediction,
            )

        def save(conn: Any) -> None:
            store.insert_report(conn, report)
            if report.dataset_drift:
                self._outbox.add(
                    conn,
                    DriftDetected(
                        model=model,
                        version=version,
                        report_id=report.id,
                        share_drifted=report.share_drifted,
                        features=[f.name for f in report.features if f.drifted],
                    ),
                )

        await self._db.write(save)
        return report

    async def list_drift_reports(self, request: ListDriftReports) -> Page[DriftReport]:
        if not 1 <= request.limit <= MAX_LIST:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")
        cursor = decode_cursor(request.cursor, "report", float, str) if request.cursor else None
        items, after = await self._db.read(
            lambda c: store.page_reports(c, request.model, request.limit, cursor)
        )
        return Page(
            items=items, next_cursor=None if after is None else encode_cursor("report", *after)
        )

    async def get_drift_report(self, request: GetDriftReport) -> DriftReport:
        report = await self._db.read(lambda c: store.get_report(c, request.id))
        if report is None:
            raise NotFound(f"no drift report {request.id!r}", details={"id": request.id})
        return report

    async def render_drift_report(self, request: GetDriftReport) -> ReportPage:
        report = await self.get_drift_report(request)
        until = report.created_at.timestamp()
        since = until - report.window_s
        reference = current = None
        reference_outputs: dict[str, np.ndarray] | None = None
        current_outputs: dict[str, np.ndarray] | None = None
        columns: list[str] = [f.name for f in report.features]
        with contextlib.suppress(NotFound):
            _, _, profile = await self._profile(f"{report.model}:{report.version}")
            reference = np.asarray(profile.sample.to_numpy(), dtype=np.float64)
            task = (await self._version_of(report.model, report.version))[0] or profile.task
            reference_outputs = figures.drift_outputs(
                task, {k: np.asarray(t.to_numpy()) for k, t in profile.predictions.items()}
            )
            columns = profile.columns
            current, logged_outputs = await self._current(
                report.model, report.version, len(columns), since, until
            )
            current_outputs = figures.drift_outputs(task, logged_outputs)
        rows = await self._db.read(
            lambda c: store.latencies(c, report.model, report.version, since, until)
        )
        latency, errors = _series(rows, since, until)
        html = render(
            report,
            reference=reference,
            current=current,
            columns=columns,
            latency=latency,
            error_rate=errors,
            reference_predictions=reference_outputs,
            current_predictions=current_outputs,
        )
        return ReportPage(id=report.id, html=html)

    # --- feedback ---------------------------------------------------------------------------

    async def submit_feedback(self, request: SubmitFeedback) -> Feedback:
        if request.label is None and request.value is None:
            raise InvalidInput("feedback needs a label (the true outcome) or a value")
        now = datetime.now(UTC)

        def attach(conn: Any) -> Feedback:
            found = store.prediction(conn, request.prediction_id)
            if found is None:
                raise NotFound(
                    f"no prediction {request.prediction_id!r} is known to monitoring (records"
                    " arrive within a second of the prediction)",
                    details={"prediction_id": request.prediction_id},
                )
            if store.get_feedback(conn, request.prediction_id) is not None:
                raise Conflict(
                    f"prediction {request.prediction_id!r} already has feedback",
                    details={"prediction_id": request.prediction_id},
                )
            item = Feedback(
                prediction_id=request.prediction_id,
                model=found[0],
                version=found[1],
                label=request.label,
                value=request.value,
                at=now,
            )
            store.insert_feedback(conn, item)
            return item

        return await self._db.write(attach)

    async def get_realised_metrics(self, request: GetRealisedMetrics) -> RealisedMetrics:
        validate_name(request.model, what="model name")
        if not 1 <= request.buckets <= MAX_BUCKETS:
            raise InvalidInput(f"buckets must be between 1 and {MAX_BUCKETS}")
        window = _window(request.window_s)
        until = time.time()
        since = until - window
        items = await self._db.read(
            lambda c: store.feedback_for(c, request.model, request.version, since, until)
        )
        first = next((i for i in items if i[2]), None)
        task = (
            figures.task_of(first[2], (await self._version_of(request.model, first[1]))[0])
            if first is not None
            else None
        )
        overall = await self._realised(request.model, task, items)
        points = []
        for start, end in _slices(since, until, request.buckets):
            part = [i for i in items if start <= i[0] < end]
            point = await self._realised(request.model, task, part)
            points.append(
                RealisedPoint(
                    start=_utc(start),
                    end=_utc(end),
                    count=len(part),
                    metrics=point[0],
                    cost=point[1],
                    value=point[2],
                )
            )
        return RealisedMetrics(
            model=request.model,
            version=request.version,
            task=task,
            count=len(items),
            metrics=overall[0],
            cost=overall[1],
            value=overall[2],
            points=points,
        )

    async def _realised(
        self, model: str, task: figures.Task | None, items: list[Any]
    ) -> tuple[dict[str, float], float | None, float | None]:
        values = [i[4] for i in items if i[4] is not None]
        value = float(sum(values)) if values else None
        labelled = [i for i in items if i[3] is not None and i[2]]
        if task is None or not labelled:
            return {}, None, value
        if task == "regression":
            truth = np.array([float(i[3]) for i in labelled])
            guess = np.concatenate([figures.predicted(task, i[2]) for i in labelled])
            return figures.regression_metrics(truth, guess), None, value
        truths, probabilities = [], []
        for item in labelled:
            classes = (await self._version_of(model, item[1]))[1]
            index = figures.class_of(item[3], classes)
            if index is None:
                continue
            truths.append(index)
            probabilities.append(figures.predicted(task, item[2])[0])
        if not truths:
            return {}, None, value
        metrics, cost = figures.classification_metrics(
            np.array(truths),
            np.stack(probabilities),
            self._config.cost_fp,
            self._config.cost_fn,
        )
        return metrics, cost, value

    # --- estimated performance --------------------------------------------------------------

    async def get_estimated_metrics(self, request: GetEstimatedMetrics) -> EstimatedMetrics:
        validate_name(request.model, what="model name")
        if not 1 <= request.buckets <= MAX_BUCKETS:
            raise InvalidInput(f"buckets must be between 1 and {MAX_BUCKETS}")
        until = time.time()
        return await self._estimate(
            request.model,
            request.version,
            until - _window(request.window_s),
            until,
            request.buckets,
        )

    async def _estimate(
        self, model: str, version: int | None, since: float, until: float, buckets: int = 1
    ) -> EstimatedMetrics:
        done = await self._db.read(lambda c: store.logged(c, model, version, since, until))
        done = [d for d in done if d.outputs]
        task = (
            figures.task_of(done[0].outputs, (await self._version_of(model, done[0].version))[0])
            if done
            else None
        )
        if task != "classification":
            return EstimatedMetrics(model=model, version=version, count=len(done))
        if not cbpe.are_probabilities(_probabilities(done)):
            return EstimatedMetrics(
                model=model,
                version=version,
                count=len(done),
                warnings=[
                    "no estimate: the outputs are not probabilities (rows in [0, 1] summing to 1)"
                ],
            )
        metrics, lower, upper = cbpe.estimate(_probabilities(done))
        points = []
        for start, end in _slices(since, until, buckets):
            part = [d for d in done if start <= d.at < end]
            low_high = cbpe.estimate(_probabilities(part)) if part else ({}, {}, {})
            points.append(
                EstimatedPoint(
                    start=_utc(start),
                    end=_utc(end),
                    count=len(part),
                    metrics=low_high[0],
                    lower=low_high[1],
                    upper=low_high[2],
                )
            )
        error, rows = await self._calibration(model, version, until)
        warnings = []
        if error is None:
            warnings.append(
                f"calibration unknown: {rows} predictions have labelled feedback, at least"
                f" {CALIBRATION_ROWS} are needed to check that the probabilities are calibrated"
            )
        elif error > self._config.calibration_error_max:
            warnings.append(
                f"poorly calibrated: expected calibration error {error:.3f} on {rows} labelled"
                f" predictions exceeds {self._config.calibration_error_max}; the estimate"
                " assumes calibrated probabilities"
            )
        return EstimatedMetrics(
            model=model,
            version=version,
            count=len(done),
            metrics=metrics,
            lower=lower,
            upper=upper,
            points=points,
            calibration_error=error,
            calibration_rows=rows,
            warnings=warnings,
        )

    async def _calibration(
        self, model: str, version: int | None, until: float
    ) -> tuple[float | None, int]:
        """Expected calibration error over the labelled predictions kept (``None`` when too
        few), and how many there were."""
        since = until - self._config.retention_s
        items = await self._db.read(lambda c: store.feedback_for(c, model, version, since, until))
        truths, probabilities = [], []
        for _, item_version, outputs, label, _value in items[-CALIBRATION_LIMIT:]:
            if label is None or not outputs:
                continue
            index = figures.class_of(label, (await self._version_of(model, item_version))[1])
            if index is not None:
                truths.append(index)
                probabilities.append(figures.predicted("classification", outputs)[0])
        if len(truths) < CALIBRATION_ROWS:
            return None, len(truths)
        return cbpe.calibration_error(np.stack(probabilities), np.array(truths)), len(truths)

    # --- expectations -----------------------------------------------------------------------

    async def fit_expectations(self, request: FitExpectations) -> FittedExpectations:
        return await self.inputs.fit(request)

    async def get_expectation_violations(
        self, request: GetExpectationViolations
    ) -> ExpectationViolations:
        _window(request.window_s)
        return await self.inputs.violations(request, until=time.time())

    # --- alerts -----------------------------------------------------------------------------

    async def put_alert(self, request: PutAlert) -> Alert:
        return await self.alerts.put(request, time.time())

    async def get_alert(self, request: GetAlert) -> Alert:
        return await self.alerts.get(request)

    async def list_alerts(self, request: ListAlerts) -> Page[Alert]:
        return await self.alerts.page(request)

    async def delete_alert(self, request: DeleteAlert) -> Alert:
        return await self.alerts.delete(request)

    async def evaluate_alerts(self, *, now: float) -> list[Alert]:
        """One evaluation round of every alert rule at epoch time ``now``."""
        return await self.alerts.evaluate(now)

    async def _measure(self, rule: Alert, now: float) -> float | None:
        """``rule``'s signal over its window ending at ``now`` (``None``: no data)."""
        if self._targets.handles(rule):
            return await self._targets.measure(rule, now)
        model, version, since = rule.model, rule.version, now - rule.window_s
        if rule.signal in _TRAFFIC_SIGNALS:
            rows = await self._db.read(lambda c: store.latencies(c, model, version, since, now))
            if rule.signal == "prediction_volume":
                return float(len(rows))
            found = figures.latency_figures([r[1] for r in rows], [r[2] for r in rows], self._slo_s)
            value = found.get(_TRAFFIC_SIGNALS[rule.signal])
            return None if value is None or not found["requests"] else float(value)
        if rule.signal == "drift_share":
            newest = await self._db.read(lambda c: store.newest_report(c, model, version, since))
            return None if newest is None else newest.share_drifted
        if rule.signal == "realised_accuracy":
            return await self._realised_accuracy(model, version, since, now)
        estimated = await self._estimate(model, version, since, now)
        return estimated.metrics.get("accuracy")

    async def _realised_accuracy(
        self, model: str, version: int | None, since: float, until: float
    ) -> float | None:
        items = await self._db.read(lambda c: store.feedback_for(c, model, version, since, until))
        first = next((i for i in items if i[2]), None)
        if first is None:
            return None
        task = figures.task_of(first[2], (await self._version_of(model, first[1]))[0])
        return (await self._realised(model, task, items))[0].get("accuracy")

    async def _version_of(
        self, model: str, version: int | None
    ) -> tuple[figures.Task | None, list[str] | None]:
        """The task and class names the registry holds for a version (``None`` when unknown):
        its ``task`` and ``classes``, else the classes training kept in its lineage."""
        if version is None:
            return None, None
        key = (model, version)
        if key not in self._versions:
            try:
                info = await self._registry.get_version(GetVersion(ref=f"{model}:{version}"))
                text = info.lineage.extra.get("classes")
                classes = info.classes or (json.loads(text) if text else None)
                self._versions[key] = (info.task, classes)
            except (NotFound, ValueError):
                self._versions[key] = (None, None)
        return self._versions[key]


def _probabilities(done: list[store.Logged]) -> np.ndarray:
    """The class probabilities of logged classifier predictions, ``[rows, classes]`` (of those
    with as many classes as the newest: versions of a model may differ)."""
    arrays = [figures.predicted("classification", d.outputs) for d in done]
    width = arrays[-1].shape[1]
    return np.concatenate([a for a in arrays if a.shape[1] == width])


def _slices(since: float, until: float, buckets: int) -> list[tuple[float, float]]:
    """``[since, until)`` cut into ``buckets`` equal ``(start, end)`` slices."""
    step = (until - since) / buckets
    return [(since + b * step, since + (b + 1) * step) for b in range(buckets)]


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _window(seconds: float) -> float:
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidInput(f"window must be between 0 and {MAX_WINDOW_S:.0f} seconds")
    return float(seconds)


def _series(
    rows: list[tuple[float, float, str]], since: float, until: float
) -> tuple[list[tuple[datetime, float | None]], list[tuple[datetime, float | None]]]:
    step = (until - since) / SERIES_BUCKETS
    latency: list[tuple[datetime, float | None]] = []
    errors: list[tuple[datetime, float | None]] = []
    for b in range(SERIES_BUCKETS):
        start = since + b * step
        part = [r for r in rows if start <= r[0] < start + step]
        moment = datetime.fromtimestamp(start + step / 2, tz=UTC)
        if not part:
            latency.append((moment, None))
            errors.append((moment, None))
            continue
        latency.append((moment, float(np.quantile([r[1] for r in part], 0.99)) * 1000))
        errors.append((moment, sum(1 for r in part if r[2] != "ok") / len(part)))
    return latency, errors
