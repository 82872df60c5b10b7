"""The features module: feature views, feature services, online and offline stores.

Exports only ``module``.
"""

from __future__ import annotations

from app.kernel.module import BuiltModule, ModuleContext, ModuleSpec
from app.modules.features.settings import FeaturesSettings
from contracts.features import VERSION, FeaturesService, FeatureViewChanged

__all__ = ["module"]


async def _build(ctx: ModuleContext) -> BuiltModule:
    from app.modules.features.online import open_online_store
    from app.modules.features.service import LocalFeaturesService

    config: FeaturesSettings = ctx.config
    service = LocalFeaturesService(
        db=ctx.db,
        outbox=ctx.outbox,
        online=open_online_store(config.online_store_url, ctx.db, ctx.settings.redis_prefix),
        logger=ctx.logger,
        future_tolerance_s=config.future_tolerance_s,
    )
    return BuiltModule(service=service, on_shutdown=[service.close])


def _routes(service: FeaturesService, settings: object) -> list[object]:
    from app.modules.features.api import routes

    return routes(service)


module = ModuleSpec(
    name="features",
    provides=FeaturesService,
    contract_version=VERSION,
    build=_build,
    routes=_routes,
    publishes=(FeatureViewChanged,),
    migrations="features",
    settings=FeaturesSettings,
)
