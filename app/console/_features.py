"""``/ui/features``: feature views and services with their versions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from litestar import Request, get
from litestar.params import FromPath, FromQuery
from litestar.response import Response

from app.console._clients import Clients
from app.console._forms import gather
from app.console._render import page
from contracts.common import Page
from contracts.features import (
    FeatureView,
    GetFeatureService,
    GetFeatureView,
    ListFeatureServices,
    ListFeatureViews,
)

__all__ = ["feature_handlers"]

T = TypeVar("T")

PAGE = 50
OLDER_VERSIONS = 10
"""Earlier versions a view or service page lists below its latest."""


def feature_handlers(q: Clients) -> list[Any]:
    """The features pages (reading only)."""

    @get("/features")
    async def features(
        request: Request[Any, Any, Any],
        views_cursor: FromQuery[str | None] = None,
        services_cursor: FromQuery[str | None] = None,
    ) -> Response[str]:
        views, services = await gather(
            lambda: q.features.list_views(
                ListFeatureViews(limit=PAGE, cursor=views_cursor or None)
            ),
            lambda: q.features.list_services(
                ListFeatureServices(limit=PAGE, cursor=services_cursor or None)
            ),
        )
        found, _ = views
        counted = await _counted(q, found)
        return page(
            request,
            "features.html",
            title="Features",
            views=views,
            services=services,
            counted=counted,
            age=_age,
        )

    @get("/features/views/{name:str}")
    async def view(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[str]:
        latest, older = await _with_earlier(
            lambda version: q.features.get_view(GetFeatureView(name=name, version=version))
        )
        return page(
            request,
            "feature_view.html",
            title=f"Feature view {name}",
            view=latest,
            older=older,
            age=_age,
        )

    @get("/features/services/{name:str}")
    async def service(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[str]:
        latest, older = await _with_earlier(
            lambda version: q.features.get_service(GetFeatureService(name=name, version=version))
        )
        return page(
            request,
            "feature_service.html",
            title=f"Feature service {name}",
            service=latest,
            older=older,
        )

    return [features, view, service]


async def _with_earlier(get: Callable[[int | None], Awaitable[T]]) -> tuple[T, list[T]]:
    """The latest version (``get(None)``) and up to :data:`OLDER_VERSIONS` before it."""
    latest = await get(None)
    number = int(getattr(latest, "version", 1))
    earlier = range(number - 1, max(number - 1 - OLDER_VERSIONS, 0), -1)
    found = await gather(*(lambda v=v: get(v) for v in earlier))
    return latest, [item for item, _ in found if item is not None]


async def _counted(q: Clients, views: Page[FeatureView] | None) -> dict[str, FeatureView]:
    """The listed views as ``get_view`` answers them (with rows and freshness), by name: one
    call per view of the page (at most :data:`PAGE`); a view that fails is left out."""
    if views is None:
        return {}
    found = await gather(
        *(lambda v=v: q.features.get_view(GetFeatureView(name=v.name)) for v in views.items)
    )
    return {view.name: view for view, _ in found if view is not None}


def _age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was, roughly ("3 min ago"); "no rows" for ``None``."""
    if moment is None:
        return "no rows"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"
