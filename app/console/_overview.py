"""``/ui``: where the modules run, and what is happening across them."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Response

from app.console._clients import Clients
from app.console._forms import gather
from app.console._render import page
from app.kernel.http.app import PlatformView
from contracts.inference import ListDeployments, ListRollouts
from contracts.monitoring import DriftReport, ListDriftReports
from contracts.registry import ListModels, ModelInfo
from contracts.training import ListTrainingJobs

__all__ = ["overview_handlers"]

ROWS = 20
DRIFT_MODELS = 10
"""Models whose latest drift verdict the overview shows (the first of the models list)."""


def overview_handlers(q: Clients, platform: PlatformView) -> list[Any]:
    """``GET /ui``."""

    @get("/")
    async def overview(request: Request[Any, Any, Any]) -> Response[str]:
        models, deployments, rollouts, jobs = await gather(
            lambda: q.registry.list_models(ListModels(limit=ROWS)),
            lambda: q.inference.list_deployments(ListDeployments(limit=ROWS)),
            lambda: q.inference.list_rollouts(ListRollouts(limit=50)),
            lambda: q.training.list_jobs(ListTrainingJobs(status="running", limit=ROWS)),
        )
        running = [r for r in rollouts[0].items if r.status == "running"] if rollouts[0] else []
        return page(
            request,
            "overview.html",
            title="Overview",
            modules=platform.module_statuses(),
            models=models,
            deployments=deployments,
            rollouts=(running, rollouts[1]),
            jobs=jobs,
            drift=await _recent_drift(q, models[0].items if models[0] else []),
        )

    return [overview]


async def _recent_drift(
    q: Clients, models: list[ModelInfo]
) -> tuple[list[DriftReport], str | None]:
    """The latest drift report of each of the first models, newest first."""
    if not q.has("monitoring"):
        return [], "the monitoring module is not reachable from this process"
    answers = await gather(
        *(
            lambda name=m.name: q.monitoring.list_drift_reports(
                ListDriftReports(model=name, limit=1)
            )
            for m in models[:DRIFT_MODELS]
        )
    )
    reports = [found.items[0] for found, _ in answers if found is not None and found.items]
    errors = [error for _, error in answers if error is not None]
    reports.sort(key=lambda r: r.created_at, reverse=True)
    return reports, (errors[0] if errors else None)
