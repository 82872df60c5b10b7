"""The features module: feature views, feature services, online and offline stores.

Exports only ``module``.
"""

from __future__ import annotations

from app.kernel.module import BuiltModule, ModuleContext, ModuleSpec
from app.modules.features.settings import FeaturesSettings
from contracts.features import (
    VERSION,
    FeaturesService,
    FeatureView,
    FeatureViewChanged,
    GetFeatureView,
)

__all__ = ["module"]


async def _build(ctx: ModuleContext) -> BuiltModule:
    from app.modules.features.materialize import Materializer
    from app.modules.features.online import open_online_store
    from app.modules.features.service import LocalFeaturesService
    from app.modules.features.sources import SourcePolicy

    config: FeaturesSettings = ctx.config
    policy = SourcePolicy.of(config.source_roots, config.source_databases, ctx.settings.data_dir)

    def materializer(service: LocalFeaturesService) -> Materializer:
        async def get_view(name: str) -> FeatureView:
            return await service.find_view(GetFeatureView(name=name))

        return Materializer(
            db=ctx.db,
            tasks=ctx.tasks,
            policy=policy,
            get_view=get_view,
            list_views=service.all_views,
            write=service.write_rows,
            settings=ctx.settings,
            schedule_check_s=config.schedule_check_s,
            logger=ctx.logger,
        )

    service = LocalFeaturesService(
        db=ctx.db,
        outbox=ctx.outbox,
        online=open_online_store(config.online_store_url, ctx.db, ctx.settings.redis_prefix),
        logger=ctx.logger,
        future_tolerance_s=config.future_tolerance_s,
        materializer=materializer,
    )
    return BuiltModule(service=service, on_startup=[service.start], on_shutdown=[service.close])


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
