"""The inference module: model serving on ONNX Runtime. Exports only ``module``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.kernel.module import BuiltModule, Dependency, ModuleContext, ModuleSpec
from app.modules.inference.settings import InferenceSettings
from contracts.features import FeaturesService
from contracts.inference import VERSION, InferenceService, RolloutChanged
from contracts.monitoring import MonitoringService
from contracts.registry import ModelAliasChanged, ModelVersionRegistered, RegistryService

if TYPE_CHECKING:
    from app.kernel.settings import Settings

__all__ = ["module"]


async def _build(ctx: ModuleContext) -> BuiltModule:
    from app.modules.inference.service import LocalInferenceService

    service = LocalInferenceService(
        registry=ctx.require(RegistryService),
        settings=ctx.settings,
        logger=ctx.logger,
        db=ctx.db,
        tasks=ctx.tasks,
        features=ctx.optional(FeaturesService),
        monitoring=ctx.optional(MonitoringService),
        outbox=ctx.outbox,
    )
    return BuiltModule(
        service=service,
        subscriptions={
            ModelAliasChanged: service.on_alias_changed,
            ModelVersionRegistered: service.on_version_registered,
        },
        on_startup=[service.start],
        on_shutdown=[service.close],
    )


def _routes(service: InferenceService, settings: Settings) -> list[object]:
    from app.modules.inference.api import routes

    return routes(service, settings)


module = ModuleSpec(
    name="inference",
    provides=InferenceService,
    contract_version=VERSION,
    build=_build,
    routes=_routes,
    requires=(
        Dependency(module="registry", protocol=RegistryService),
        Dependency(module="features", protocol=FeaturesService, optional=True),
        Dependency(module="monitoring", protocol=MonitoringService, optional=True),
    ),
    publishes=(RolloutChanged,),
    subscribes=(ModelAliasChanged, ModelVersionRegistered),
    migrations="inference",
    settings=InferenceSettings,
)
