"""The notifications module: signed webhooks for the platform's events. Exports only ``module``.

It subscribes to every event the other modules publish and turns each one into a delivery per
webhook whose patterns match it, sent by its own delivery loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.kernel.events import event_type_name
from app.kernel.module import BuiltModule, ModuleContext, ModuleSpec
from app.modules.notifications.settings import NotificationsSettings
from contracts.features import FeatureViewChanged
from contracts.inference import RolloutChanged
from contracts.monitoring import AlertFired, AlertResolved, DriftDetected
from contracts.notifications import VERSION, NotificationsService
from contracts.registry import ModelAliasChanged, ModelVersionRegistered
from contracts.training import TrainingJobFinished

__all__ = ["module"]

_EVENTS: tuple[type, ...] = (
    ModelVersionRegistered,
    ModelAliasChanged,
    FeatureViewChanged,
    DriftDetected,
    AlertFired,
    AlertResolved,
    RolloutChanged,
    TrainingJobFinished,
)
"""Every event a module publishes: what webhooks can ask for."""


async def _build(ctx: ModuleContext) -> BuiltModule:
    from app.modules.notifications.service import LocalNotificationsService

    service = LocalNotificationsService(
        db=ctx.db,
        config=ctx.config,
        event_types=[event_type_name(t) for t in _EVENTS],
        logger=ctx.logger,
    )
    return BuiltModule(
        service=service,
        subscriptions=dict.fromkeys(_EVENTS, service.on_event),
        on_startup=[service.start],
        on_shutdown=[service.close],
    )


def _routes(service: NotificationsService, settings: object) -> Sequence[object]:
    from app.modules.notifications.api import routes

    return routes(service)


module = ModuleSpec(
    name="notifications",
    provides=NotificationsService,
    contract_version=VERSION,
    build=_build,
    routes=_routes,
    subscribes=_EVENTS,
    migrations="notifications",
    settings=NotificationsSettings,
)
