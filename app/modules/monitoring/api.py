"""The monitoring module's public routes under ``/v1/monitoring``.

- ``GET /models/{name}/summary?window=5m[&version=N]``
- ``POST /drift/{model}`` (run a check; body optional: ``{"window": "1h", "psi": true}``),
  ``GET /drift/{model}`` (list reports)
- ``GET /reports/{id}`` (JSON) and ``GET /reports/{id}/html`` (a self-contained page)
- ``POST /feedback`` with ``{"prediction_id": ..., "label": ..., "value": ...}``
- ``GET /models/{name}/realised?window=1d&buckets=N[&version=N]``
- ``GET /models/{name}/series?window=1h&buckets=N[&version=N]`` and
  ``GET /deployments/{name}/series?window=1h&buckets=N`` (traffic, errors, latency per step)

Windows are seconds or a number with a unit: ``30s``, ``5m``, ``2h``, ``1d``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import PathParameter, QueryParameter

from app.kernel.http.bodies import contract_scope, decode_body, from_params, json_response
from app.kernel.http.openapi import MODEL_REF_PATTERN, documented
from app.kernel.http.params import (
    PageCursor,
    VersionQuery,
    parse_duration,
    version_number,
)
from app.kernel.http.patterns import duration_pattern
from app.modules.monitoring.service import MAX_BUCKETS, MAX_LIST, MAX_WINDOW_S
from contracts.common import NAME_PATTERN, Finite, InvalidInput, Page, PositiveCount
from contracts.features import Value
from contracts.monitoring import (
    MAX_SERIES_BUCKETS,
    DriftReport,
    Feedback,
    GetDriftReport,
    GetRealisedMetrics,
    GetSeries,
    GetSummary,
    ListDriftReports,
    MonitoringService,
    RealisedMetrics,
    RunDriftCheck,
    Series,
    SubmitFeedback,
    Summary,
)

__all__ = ["for_model", "routes"]

T = TypeVar("T")

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
Buckets = Annotated[
    int,
    QueryParameter(
        description="How many slices the window is cut into.",
        schema_extra={"minimum": 1, "maximum": MAX_BUCKETS},
    ),
]
SeriesBuckets = Annotated[
    int,
    QueryParameter(
        description="How many steps the window is cut into.",
        schema_extra={"minimum": 1, "maximum": MAX_SERIES_BUCKETS},
    ),
]
DeploymentName = Annotated[
    str,
    PathParameter(description="The deployment's name.", schema_extra={"pattern": NAME_PATTERN}),
]
ReportsLimit = Annotated[
    int,
    QueryParameter(description="Page size.", schema_extra={"minimum": 1, "maximum": MAX_LIST}),
]
WINDOW_PATTERN = duration_pattern(MAX_WINDOW_S, positive=True)
"""A window: more than nothing, at most :data:`MAX_WINDOW_S` (90 days)."""
WindowQuery = Annotated[
    str,
    QueryParameter(
        description="A duration: seconds, or a number with a unit (30s, 5m, 2h, 1d);"
        " at most 90 days.",
        schema_extra={"pattern": WINDOW_PATTERN},
    ),
]
Window = Annotated[
    str | float,
    msgspec.Meta(
        extra_json_schema={
            # plain JSON, copied into the document as it is: the pattern binds a text, the
            # bounds a number
            "extra": {
                "one_of": None,
                "type": ["string", "number"],
                "pattern": WINDOW_PATTERN,
                "exclusiveMinimum": 0,
                "maximum": MAX_WINDOW_S,
            }
        }
    ),
]
"""A duration as text (``"1h"``) or seconds; read by :func:`parse_duration`, bounded like
:data:`contracts.common.Seconds`."""


class DriftBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/monitoring/drift/{model}`` (every field optional)."""

    window: Window = 3600.0
    psi: bool = False
    share_threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    min_rows: PositiveCount = 30


_NOT_NULL = Schema(schema_not=Schema(type=OpenAPIType.NULL))


class FeedbackBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/monitoring/feedback``."""

    prediction_id: str
    label: Value = None
    value: Finite | None = None

    openapi_extra: ClassVar[dict[str, Any]] = {
        "any_of": [
            Schema(
                required=["label"],
                properties={"label": Schema(schema_not=Schema(type=OpenAPIType.NULL))},
            ),
            Schema(required=["value"], properties={"value": Schema(type=OpenAPIType.NUMBER)}),
        ]
    }
    """A label, a value or both: feedback with neither is refused."""


_DRIFT = msgspec.json.Decoder(DriftBody)
_FEEDBACK = msgspec.json.Decoder(FeedbackBody)


def for_model(
    request_type: type[T], name: str, window: str, version: str | None, **params: Any
) -> T:
    """``request_type`` built from a route's model ``name``, ``?version=`` and ``?window=``
    (checked like :func:`from_params`), and its other ``params``."""
    return from_params(
        request_type,
        model=name,
        version=version_number(version),
        window_s=parse_duration(window, WINDOW_PATTERN),
        **params,
    )


def routes(service: MonitoringService) -> list[Any]:
    """Public routes of the monitoring module, calling ``service`` (local or remote)."""

    @get(
        "/models/{name:str}/summary",
        opt=contract_scope(MonitoringService.get_summary),
        **documented(answer=Summary),
    )
    async def summary(
        name: ModelName, window: WindowQuery = "5m", version: VersionQuery = None
    ) -> Response[bytes]:
        """QPS, error rate, latency quantiles, SLO compliance and prediction figures."""
        request = for_model(GetSummary, name, window, version)
        return json_response(await service.get_summary(request))

    @get(
        "/models/{name:str}/realised",
        opt=contract_scope(MonitoringService.get_realised_metrics),
        **documented(answer=RealisedMetrics),
    )
    async def realised(
        name: ModelName,
        window: WindowQuery = "1d",
        buckets: Buckets = 1,
        version: VersionQuery = None,
    ) -> Response[bytes]:
        """Quality, cost and value realised from feedback."""
        request = for_model(GetRealisedMetrics, name, window, version, buckets=buckets)
        return json_response(await service.get_realised_metrics(request))

    @get(
        "/models/{name:str}/series",
        opt=contract_scope(MonitoringService.get_series),
        **documented(answer=Series),
    )
    async def model_series(
        name: ModelName,
        window: WindowQuery = "1h",
        buckets: SeriesBuckets = 60,
        version: VersionQuery = None,
    ) -> Response[bytes]:
        """Requests, errors by code and latency quantiles per step of the window."""
        request = for_model(GetSeries, name, window, version, buckets=buckets)
        return json_response(await service.get_series(request))

    @get(
        "/deployments/{name:str}/series",
        opt=contract_scope(MonitoringService.get_series),
        **documented(answer=Series),
    )
    async def deployment_series(
        name: DeploymentName, window: WindowQuery = "1h", buckets: SeriesBuckets = 60
    ) -> Response[bytes]:
        """The same per step, of every prediction served through the deployment."""
        request = from_params(
            GetSeries,
            deployment=name,
            window_s=parse_duration(window, WINDOW_PATTERN),
            buckets=buckets,
        )
        return json_response(await service.get_series(request))

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
            window_s=parse_duration(body.window, WINDOW_PATTERN),
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
        model: ModelRef, limit: ReportsLimit = 50, cursor: PageCursor = None
    ) -> Response[bytes]:
        """One page of the model's drift reports, newest first."""
        if not re.fullmatch(MODEL_REF_PATTERN, model):  # not an empty page for such a reference
            raise InvalidInput(
                f"invalid model reference {model[:200]!r}: expected name, name:N or name@alias",
                details={"field": "model"},
            )
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

    handlers = [
        summary,
        realised,
        model_series,
        deployment_series,
        run_check,
        list_reports,
        report,
        report_html,
        feedback,
    ]
    return [Router(path="/v1/monitoring", route_handlers=handlers, tags=["monitoring"])]
