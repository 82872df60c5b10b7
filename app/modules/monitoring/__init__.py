"""The monitoring module: prediction records, summaries, drift, feedback, estimated
performance and alert rules.

Exports only ``module``.
"""

from __future__ import annotations

from app.kernel.module import BuiltModule, Dependency, ModuleContext, ModuleSpec
from app.modules.monitoring.settings import MonitoringSettings
from contracts.features import FeaturesService
from contracts.monitoring import (
    VERSION,
    AlertFired,
    AlertResolved,
    DriftDetected,
    MonitoringService,
)
from contracts.registry import RegistryService

__all__ = ["module"]


async def _build(ctx: ModuleContext) -> BuiltModule:
    from app.modules.monitoring.service import LocalMonitoringService

    service = LocalMonitoringService(
        db=ctx.db,
        outbox=ctx.outbox,
        registry=ctx.require(RegistryService),
        features=ctx.optional(FeaturesService),
        settings=ctx.settings,
        config=ctx.config,
        logger=ctx.logger,
    )
    return BuiltModule(service=service, on_startup=[service.start], on_shutdown=[service.close])


def _routes(service: MonitoringService, settings: object) -> list[object]:
    from app.modules.monitoring import alerts_api, api

    return [*api.routes(service), *alerts_api.routes(service)]


module = ModuleSpec(
    name="monitoring",
    provides=MonitoringService,
    contract_version=VERSION,
    build=_build,
    routes=_routes,
    requires=(
        Dependency(module="registry", protocol=RegistryService),
        Dependency(module="features", protocol=FeaturesService, optional=True),
    ),
    publishes=(DriftDetected, AlertFired, AlertResolved),
    migrations="monitoring",
    settings=MonitoringSettings,
)
