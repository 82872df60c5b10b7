"""The monitoring module's routes for alert rules and estimated performance, under
``/v1/monitoring``.

- ``GET /alerts``, ``GET|PUT|DELETE /alerts/{name}``: ``PUT`` takes ``model``, ``signal``,
  ``threshold``, and optionally ``comparison`` (``above``/``below``), ``window``, ``for`` (both
  durations: seconds or ``30s``, ``5m``, ``2h``, ``1d``) and ``version``
- ``GET /models/{name}/estimated?window=1d&buckets=N[&version=N]``

Writes need the ``admin`` scope, reads ``read`` (from the contract's markers).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Router, delete, get, put
from litestar.params import JSONBody, PathParameter

from app.kernel.http.bodies import contract_scope, from_params
from app.kernel.http.params import (
    PageCursor,
    PageLimit,
    VersionQuery,
    parse_duration,
    version_number,
)
from app.kernel.http.patterns import duration_pattern
from app.modules.monitoring.api import WINDOW_PATTERN, Buckets, ModelName, Window, WindowQuery
from app.modules.monitoring.service import MAX_WINDOW_S
from contracts.common import NAME_PATTERN, Finite, Page, Version
from contracts.monitoring import (
    Alert,
    AlertSignal,
    DeleteAlert,
    EstimatedMetrics,
    GetAlert,
    GetEstimatedMetrics,
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


class AlertBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PUT /v1/monitoring/alerts/{name}``."""

    model: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
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
        rule = from_params(
            PutAlert,
            name=name,
            model=data.model,
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
        request = from_params(
            GetEstimatedMetrics,
            model=name,
            version=version_number(version),
            window_s=parse_duration(window, WINDOW_PATTERN),
            buckets=buckets,
        )
        return await service.get_estimated_metrics(request)

    handlers: list[Any] = [list_alerts, get_alert, put_alert, delete_alert, estimated]
    return [Router(path="/v1/monitoring", route_handlers=handlers, tags=["monitoring"])]
