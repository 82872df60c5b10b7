"""The monitoring module's routes for alert rules, estimated performance and data
expectations, under ``/v1/monitoring``.

- ``GET /alerts``, ``GET|PUT|DELETE /alerts/{name}``: ``PUT`` takes one of ``model``,
  ``deployment`` or ``view``, then ``signal``, ``threshold``, and optionally ``comparison``
  (``above``/``below``), ``window``, ``for`` (both durations: seconds or ``30s``, ``5m``,
  ``2h``, ``1d``), ``version`` and ``feature``
- ``GET /models/{name}/estimated?window=1d&buckets=N[&version=N]``
- ``GET /models/{ref}/expectations[?view=V&tolerance=0.1]``: expectations fitted on the version's
  reference profile (the body ``PUT /v1/features/views/{view}/expectations`` takes)
- ``GET /models/{name}/violations?window=1h[&version=N]``: served inputs breaking them

Writes need the ``admin`` scope, reads ``read`` (from the contract's markers).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Router, delete, get, put
from litestar.params import JSONBody, PathParameter, QueryParameter

from app.kernel.http.bodies import contract_scope, from_params
from app.kernel.http.params import (
    PageCursor,
    PageLimit,
    VersionQuery,
    parse_duration,
)
from app.kernel.http.patterns import duration_pattern
from app.modules.monitoring.api import (
    WINDOW_PATTERN,
    Buckets,
    ModelName,
    ModelRef,
    Window,
    WindowQuery,
    for_model,
)
from app.modules.monitoring.service import MAX_WINDOW_S
from contracts.common import NAME_PATTERN, Finite, InvalidInput, Page, Version
from contracts.monitoring import (
    Alert,
    AlertSignal,
    DeleteAlert,
    EstimatedMetrics,
    ExpectationViolations,
    FitExpectations,
    FittedExpectations,
    GetAlert,
    GetEstimatedMetrics,
    GetExpectationViolations,
    ListAlerts,
    MonitoringService,
    PutAlert,
)

__all__ = ["AlertBody", "routes"]

Name = Annotated[
    str,
    PathParameter(
        description="The alert rule's name.",
        schema_extra={"pattern": NAME_PATTERN, "max_length": 128},
    ),
]
FOR_PATTERN = duration_pattern(MAX_WINDOW_S)
"""How long a condition must hold: nothing (fire at once) up to :data:`MAX_WINDOW_S`."""
For = Annotated[
    str | float,
    msgspec.Meta(
        extra_json_schema={
            "extra": {
                "one_of": None,
                "type": ["string", "number"],
                "pattern": FOR_PATTERN,
                "minimum": 0,
                "maximum": MAX_WINDOW_S,
            }
        }
    ),
]


Named = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Tolerance = Annotated[
    float,
    QueryParameter(
        description="The share of a column's range added on each side.",
        schema_extra={"minimum": 0, "maximum": 1},
    ),
]
ViewQuery = Annotated[
    str | None,
    QueryParameter(
        description="Keep the columns named `feature` or `view:feature`, named `feature`.",
        schema_extra={"pattern": NAME_PATTERN},
    ),
]


class AlertBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PUT /v1/monitoring/alerts/{name}``: one of ``model`` (a registered model),
    ``deployment`` (its traffic signals) or ``view`` (``feature_freshness``)."""

    model: Named | None = None
    deployment: Named | None = None
    view: Named | None = None
    feature: str | None = None
    signal: AlertSignal
    threshold: Finite
    comparison: Literal["above", "below"] = "above"
    window: Window = "5m"
    for_: For = msgspec.field(default=0.0, name="for")
    version: Version | None = None


def routes(service: MonitoringService) -> list[Router]:
    """The alert and estimation routes, bound to ``service``, at ``/v1/monitoring``."""
    path = "/alerts/{name:str}"
    svc = MonitoringService

    @get("/alerts", opt=contract_scope(svc.list_alerts))
    async def list_alerts(limit: PageLimit = 50, cursor: PageCursor = None) -> Page[Alert]:
        """One page of alert rules by name, each with its state and last value."""
        return await service.list_alerts(from_params(ListAlerts, limit=limit, cursor=cursor))

    @get(path, opt=contract_scope(svc.get_alert))
    async def get_alert(name: Name) -> Alert:
        """An alert rule with its state (``ok``, ``pending``, ``firing``) and last value."""
        return await service.get_alert(GetAlert(name=name))

    @put(path, opt=contract_scope(svc.put_alert))
    async def put_alert(name: Name, data: JSONBody[AlertBody]) -> Alert:
        """Create or replace an alert rule (it starts ``ok``). 400 for a model the registry does
        not know or a signal that is not one of the listed ones."""
        named = [
            (target, value)
            for target, value in (
                ("model", data.model),
                ("deployment", data.deployment),
                ("view", data.view),
            )
            if value is not None
        ]
        if len(named) != 1:
            raise InvalidInput(
                "an alert watches one of model, deployment or view: give exactly one",
                details={"field": "model"},
            )
        rule = from_params(
            PutAlert,
            name=name,
            model=named[0][1],
            target=named[0][0],
            feature=data.feature,
            signal=data.signal,
            threshold=data.threshold,
            comparison=data.comparison,
            window_s=parse_duration(data.window, WINDOW_PATTERN),
            for_s=parse_duration(data.for_, FOR_PATTERN),
            version=data.version,
        )
        return await service.put_alert(rule)

    @delete(path, opt=contract_scope(svc.delete_alert), status_code=200)
    async def delete_alert(name: Name) -> Alert:
        """Delete an alert rule; answers what was deleted."""
        return await service.delete_alert(DeleteAlert(name=name))

    @get("/models/{name:str}/estimated", opt=contract_scope(svc.get_estimated_metrics))
    async def estimated(
        name: ModelName,
        window: WindowQuery = "1d",
        buckets: Buckets = 1,
        version: VersionQuery = None,
    ) -> EstimatedMetrics:
        """A classifier's accuracy, F1 and AUC estimated from its served probabilities before
        labels arrive (CBPE), with bands and a calibration warning."""
        request = for_model(GetEstimatedMetrics, name, window, version, buckets=buckets)
        return await service.get_estimated_metrics(request)

    @get("/models/{ref:str}/expectations", opt=contract_scope(svc.fit_expectations))
    async def fit_expectations(
        ref: ModelRef, view: ViewQuery = None, tolerance: Tolerance = 0.1
    ) -> FittedExpectations:
        """Data expectations fitted on the version's training profile: seen categories, the
        range widened by ``tolerance``, the null share. With ``view``, ready for
        ``PUT /v1/features/views/{view}/expectations``."""
        request = from_params(FitExpectations, model=ref, view=view, tolerance=tolerance)
        return await service.fit_expectations(request)

    @get("/models/{name:str}/violations", opt=contract_scope(svc.get_expectation_violations))
    async def violations(
        name: ModelName, window: WindowQuery = "1h", version: VersionQuery = None
    ) -> ExpectationViolations:
        """Sampled served inputs breaking the expectations fitted on their version's profile,
        counted per version and feature (a new category, a value out of range)."""
        request = for_model(GetExpectationViolations, name, window, version)
        return await service.get_expectation_violations(request)

    handlers: list[Any] = [
        list_alerts,
        get_alert,
        put_alert,
        delete_alert,
        estimated,
        fit_expectations,
        violations,
    ]
    return [Router(path="/v1/monitoring", route_handlers=handlers, tags=["monitoring"])]
