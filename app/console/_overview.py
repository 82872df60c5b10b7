"""``/ui``: where the modules run, and what is happening across them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from litestar import Request, get
from litestar.response import Response
from markupsafe import Markup

from app.console._chart import sparkline
from app.console._clients import Clients
from app.console._forms import gather
from app.console._render import page
from app.kernel.events import FailedDelivery
from app.kernel.http.app import PlatformView
from contracts.common import Page
from contracts.inference import Deployment, ListDeployments, ListRollouts
from contracts.monitoring import DriftReport, GetSeries, ListDriftReports, Series
from contracts.notifications import Delivery, ListFailedDeliveries
from contracts.registry import ListModels, ModelInfo
from contracts.training import ListTrainingJobs

__all__ = ["overview_handlers"]

_log = logging.getLogger("quarry.console")

ROWS = 20
DRIFT_MODELS = 10
"""Models whose latest drift verdict the overview shows (the first of the models list)."""
SPARK_WINDOW_S = 3600.0
SPARK_STEPS = 30
"""Each live deployment's sparklines: the last hour in two-minute steps."""
FAILED = 10
"""Failed deliveries the overview lists (webhooks, and events to subscribers)."""


@runtime_checkable
class EventFailures(Protocol):
    """A platform that can list its failed event deliveries to subscribers."""

    async def failed_events(self, limit: int) -> list[FailedDelivery]:
        """The latest ``limit`` of them, the latest failure first."""
        ...


@dataclass(frozen=True, slots=True)
class Sparks:
    """A deployment's traffic over the last hour: sparklines and their latest figures."""

    qps: Markup
    p99: Markup
    errors: Markup
    requests: int
    error_rate: float | None
    p99_s: float | None


def overview_handlers(q: Clients, platform: PlatformView) -> list[Any]:
    """``GET /ui``."""

    @get("/")
    async def overview(request: Request[Any, Any, Any]) -> Response[str]:
        models, deployments, rollouts, jobs, webhooks = await gather(
            lambda: q.registry.list_models(ListModels(limit=ROWS)),
            lambda: q.inference.list_deployments(ListDeployments(limit=ROWS)),
            lambda: q.inference.list_rollouts(ListRollouts(limit=50)),
            lambda: q.training.list_jobs(ListTrainingJobs(status="running", limit=ROWS)),
            lambda: _failed_webhooks(q),
        )
        running = [r for r in rollouts[0].items if r.status == "running"] if rollouts[0] else []
        events = await _failed_events(platform)
        return page(
            request,
            "overview.html",
            title="Overview",
            modules=platform.module_statuses(),
            models=models,
            deployments=deployments,
            sparks=await _sparks(q, deployments[0]),
            rollouts=(running, rollouts[1]),
            jobs=jobs,
            drift=await _recent_drift(q, models[0].items if models[0] else []),
            webhooks=webhooks,
            events=events,
        )

    return [overview]


async def _failed_events(platform: PlatformView) -> tuple[list[FailedDelivery], str | None]:
    """The platform's latest failed event deliveries to subscribers (none where it keeps no
    list), or why they cannot be read."""
    if not isinstance(platform, EventFailures):
        return [], None
    try:
        return await platform.failed_events(FAILED), None
    except Exception:
        _log.warning("failed event deliveries could not be read", exc_info=True)
        return [], "the event deliveries could not be read; the server log has the details"


async def _failed_webhooks(q: Clients) -> Page[Delivery] | None:
    """The latest failed webhook deliveries; ``None`` where the notifications module is not
    reachable (a platform without it has no webhooks)."""
    if not q.has("notifications"):
        return None
    return await q.notifications.list_failed_deliveries(ListFailedDeliveries(limit=FAILED))


async def _sparks(q: Clients, deployments: Page[Deployment] | None) -> dict[str, Sparks]:
    """Sparklines of each listed deployment, by name (none where monitoring cannot answer)."""
    if deployments is None or not q.has("monitoring"):
        return {}
    names = [d.name for d in deployments.items]
    answers = await gather(
        *(
            lambda n=n: q.monitoring.get_series(
                GetSeries(deployment=n, window_s=SPARK_WINDOW_S, buckets=SPARK_STEPS)
            )
            for n in names
        )
    )
    return {n: _spark(n, series) for n, (series, _) in zip(names, answers, strict=True) if series}


def _spark(name: str, series: Series) -> Sparks:
    points = series.points
    requests = sum(p.requests for p in points)
    errors = sum(p.errors for p in points)
    p99 = [p.latency_p99_s for p in points]
    known = [v for v in p99 if v is not None]
    rate = errors / requests if requests else None
    latest_p99 = known[-1] if known else None
    return Sparks(
        qps=sparkline(
            [p.qps for p in points],
            label=f"{name}: requests per second over the last hour, {requests} requests",
        ),
        p99=sparkline(
            [None if v is None else v * 1000 for v in p99],
            label=f"{name}: 99th percentile latency over the last hour"
            + (f", latest {latest_p99 * 1000:.3g} ms" if latest_p99 is not None else ", no data"),
        ),
        errors=sparkline(
            [p.error_rate if p.requests else None for p in points],
            label=f"{name}: error rate over the last hour"
            + (f", {rate:.1%} overall" if rate is not None else ", no requests"),
        ),
        requests=requests,
        error_rate=rate,
        p99_s=latest_p99,
    )


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
