"""The monitoring module's public routes under ``/v1/monitoring``.

- ``GET /models/{name}/summary?window=5m[&version=N]``
- ``POST /drift/{model}`` (run a check; body optional: ``{"window": "1h", "psi": true}``),
  ``GET /drift/{model}`` (list reports)
- ``GET /reports/{id}`` (JSON) and ``GET /reports/{id}/html`` (a self-contained page)
- ``POST /feedback`` with ``{"prediction_id": ..., "label": ..., "value": ...}``
- ``GET /models/{name}/realised?window=1d&buckets=N[&version=N]``

Windows are seconds or a number with a unit: ``30s``, ``5m``, ``2h``, ``1d``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromQuery, PathParameter

from app.kernel.http.bodies import contract_scope, decode_body, from_params, json_response
from app.kernel.http.openapi import MODEL_REF_PATTERN, documented
from app.kernel.http.params import PageCursor, PageLimit, VersionQuery
from contracts.common import NAME_PATTERN, Count, Finite, InvalidInput, Page, Share
from contracts.features import Value
from contracts.monitoring import (
    DriftReport,
    Feedback,
    GetDriftReport,
    GetRealisedMetrics,
    GetSummary,
    ListDriftReports,
    MonitoringService,
    RealisedMetrics,
    RunDriftCheck,
    SubmitFeedback,
    Summary,
)

__all__ = ["parse_window", "routes"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

ModelName = Annotated[
    str, PathParameter(description="The model's name.", schema_extra={"pattern": NAME_PATTERN})
]
ModelRef = Annotated[
    str,
    PathParameter(
        description="A model reference (`name`, `name:N`, `name@alias`).",
        schema_extra={"pattern": MODEL_REF_PATTERN},
    ),
]
ReportId = Annotated[str, PathParameter(description="The drift report's id.")]


class DriftBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/monitoring/drift/{model}`` (every field optional)."""

    window: str | float = 3600.0
    psi: bool = False
    share_threshold: Share = 0.5
    min_rows: Count = 30


class FeedbackBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/monitoring/feedback``."""

    prediction_id: str
    label: Value = None
    value: Finite | None = None


_DRIFT = msgspec.json.Decoder(DriftBody)
_FEEDBACK = msgspec.json.Decoder(FeedbackBody)


def parse_window(text: str | float) -> float:
    """Seconds from ``300``, ``30s``, ``5m``, ``2h`` or ``1d``."""
    if isinstance(text, int | float):
        return float(text)
    raw = text.strip().lower()
    try:
        if raw and raw[-1] in _UNITS:
            return float(raw[:-1]) * _UNITS[raw[-1]]
        return float(raw)
    except ValueError:
        raise InvalidInput(f"window {text!r} is not a duration such as 30s, 5m, 2h or 1d") from None


def routes(service: MonitoringService) -> list[Any]:
    """Public routes of the monitoring module, calling ``service`` (local or remote)."""

    @get(
        "/models/{name:str}/summary",
        opt=contract_scope(MonitoringService.get_summary),
        **documented(answer=Summary),
    )
    async def summary(
        name: ModelName, window: FromQuery[str] = "5m", version: VersionQuery = None
    ) -> Response[bytes]:
        """QPS, error rate, latency quantiles, SLO compliance and prediction figures."""
        request = from_params(
            GetSummary, model=name, version=version, window_s=parse_window(window)
        )
        return json_response(await service.get_summary(request))

    @get(
        "/models/{name:str}/realised",
        opt=contract_scope(MonitoringService.get_realised_metrics),
        **documented(answer=RealisedMetrics),
    )
    async def realised(
        name: ModelName,
        window: FromQuery[str] = "1d",
        buckets: FromQuery[int] = 1,
        version: VersionQuery = None,
    ) -> Response[bytes]:
        """Quality, cost and value realised from feedback."""
        request = from_params(
            GetRealisedMetrics,
            model=name,
            version=version,
            window_s=parse_window(window),
            buckets=buckets,
        )
        return json_response(await service.get_realised_metrics(request))

    @post(
        "/drift/{model:str}",
        opt=contract_scope(MonitoringService.run_drift_check),
        status_code=200,
        **documented(body=DriftBody, answer=DriftReport, body_required=False),
    )
    async def run_check(model: ModelRef, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Run a drift check of the version ``model`` resolves to; answers the report."""
        raw = await request.body()
        example = '{"window": "1h", "psi": false}'
        body = (
            decode_body(_DRIFT, raw, what="body", example=example) if raw.strip() else DriftBody()
        )
        check = from_params(
            RunDriftCheck,
            model=model,
            window_s=parse_window(body.window),
            psi=body.psi,
            share_threshold=body.share_threshold,
            min_rows=body.min_rows,
        )
        return json_response(await service.run_drift_check(check))

    @get(
        "/drift/{model:str}",
        opt=contract_scope(MonitoringService.list_drift_reports),
        **documented(answer=Page[DriftReport]),
    )
    async def list_reports(
        model: ModelRef, limit: PageLimit = 50, cursor: PageCursor = None
    ) -> Response[bytes]:
        """One page of the model's drift reports, newest first."""
        request = from_params(ListDriftReports, model=model, limit=limit, cursor=cursor)
        return json_response(await service.list_drift_reports(request))

    @get(
        "/reports/{report_id:str}",
        opt=contract_scope(MonitoringService.get_drift_report),
        **documented(answer=DriftReport),
    )
    async def report(report_id: ReportId) -> Response[bytes]:
        """A drift report as JSON."""
        return json_response(await service.get_drift_report(GetDriftReport(id=report_id)))

    @get(
        "/reports/{report_id:str}/html",
        opt=contract_scope(MonitoringService.render_drift_report),
        **documented(answer=str, answer_media_types=("text/html",)),
    )
    async def report_html(report_id: ReportId) -> Response[str]:
        """A drift report as a self-contained HTML page with charts."""
        page = await service.render_drift_report(GetDriftReport(id=report_id))
        return Response(page.html, media_type="text/html; charset=utf-8")

    @post(
        "/feedback",
        opt=contract_scope(MonitoringService.submit_feedback),
        status_code=201,
        **documented(body=FeedbackBody, answer=Feedback, status=201),
    )
    async def feedback(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Attach ground truth or an outcome value to a prediction."""
        example = '{"prediction_id": "...", "label": ...}'
        body = decode_body(_FEEDBACK, await request.body(), what="body", example=example)
        item = await service.submit_feedback(
            SubmitFeedback(prediction_id=body.prediction_id, label=body.label, value=body.value)
        )
        return json_response(item, 201)

    handlers = [summary, realised, run_check, list_reports, report, report_html, feedback]
    return [Router(path="/v1/monitoring", route_handlers=handlers, tags=["monitoring"])]
