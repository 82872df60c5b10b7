"""The training module: offline batch training jobs on the task queue. Exports only ``module``.

Serving hosts never import torch: it is imported in each job's own training process (a child of
the process that runs the job), which does the fitting, export and evaluation.
"""

from __future__ import annotations

from app.kernel.module import BuiltModule, Dependency, ModuleContext, ModuleSpec
from app.modules.training.settings import TrainingSettings
from contracts.features import FeaturesService
from contracts.inference import InferenceService
from contracts.monitoring import DriftDetected
from contracts.registry import RegistryService
from contracts.training import VERSION, TrainingJobFinished, TrainingService

__all__ = ["module"]


async def _build(ctx: ModuleContext) -> BuiltModule:
    from app.modules.training.service import LocalTrainingService

    service = LocalTrainingService(
        db=ctx.db,
        outbox=ctx.outbox,
        tasks=ctx.tasks,
        registry=ctx.require(RegistryService),
        features=ctx.optional(FeaturesService),
        inference=ctx.optional(InferenceService),
        settings=ctx.settings,
        logger=ctx.logger,
    )
    return BuiltModule(
        service=service,
        subscriptions={DriftDetected: service.retrainings.on_drift},
        on_startup=[service.start],
        on_shutdown=[service.close],
    )


def _routes(service: TrainingService, settings: object) -> list[object]:
    from app.modules.training.api import routes

    return routes(service)


module = ModuleSpec(
    name="training",
    provides=TrainingService,
    contract_version=VERSION,
    build=_build,
    routes=_routes,
    requires=(
        Dependency(module="registry", protocol=RegistryService),
        Dependency(module="features", protocol=FeaturesService, optional=True),
        Dependency(module="inference", protocol=InferenceService, optional=True),
    ),
    publishes=(TrainingJobFinished,),
    subscribes=(DriftDetected,),
    migrations="training",
    settings=TrainingSettings,
)
