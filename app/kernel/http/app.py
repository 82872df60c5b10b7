"""The litestar app factory: kernel routes, error shape, request context, auth and telemetry.

Modules contribute their routers; the composition root supplies a :class:`PlatformView` that
answers readiness and the module table.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

import msgspec
from litestar import Litestar, MediaType, Response, Router, get
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig

from app.kernel import metrics as kernel_metrics
from app.kernel import telemetry
from app.kernel.dependencies import DependencyMonitor, DependencyStatus
from app.kernel.http.auth import AuthMiddleware, auth_guard
from app.kernel.http.direct import DirectRoutes
from app.kernel.http.docs import LocalSwaggerRenderPlugin
from app.kernel.http.errors import exception_handlers, json_not_found
from app.kernel.http.methods import QuarryLitestar
from app.kernel.http.openapi import (
    DocstringsPlugin,
    ErrorResponsesPlugin,
    StructDefaultsSchemaPlugin,
)
from app.kernel.http.request import QuarryRequest
from app.kernel.http.tracing import RequestMiddleware
from app.kernel.settings import Settings

__all__ = ["WORKER_HEADER", "ModuleStatus", "ModulesAnswer", "PlatformView", "create_http_app"]

PROBE_PATHS = ("/healthz", "/readyz")
WORKER_HEADER = "x-quarry-worker"
"""The answer header naming the server process (its pid) when ``QUARRY_WORKERS`` is above 1."""
RPC_PREFIX = "/rpc/"
"""RPC skips the ASGI tracing middleware (a third of an RPC's server time): the RPC route
continues the caller's trace itself, and the call wrapper records the span that matters."""


class ModuleStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``GET /v1/modules``."""

    name: str
    placement: Literal["local", "remote"]
    url: str | None
    contract_version: str
    breaker: Literal["closed", "open", "half_open"] | None = None
    ready: bool | None = None


class ModulesAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/modules``."""

    modules: list[ModuleStatus]
    dependencies: list[DependencyStatus] = []
    """The servers this process uses (databases, Redis) and whether each answers."""


class PlatformView(Protocol):
    """What the kernel routes need to know about the running platform."""

    draining: bool
    """Set when the process was told to stop: readiness fails while requests finish."""

    def readiness(self) -> dict[str, bool]:
        """Each locally hosted module and whether it is ready."""
        ...

    def module_statuses(self) -> list[ModuleStatus]:
        """Every module this process knows: where it runs and how it is doing."""
        ...


@get("/healthz", opt={"open": "probe"}, include_in_schema=False, sync_to_thread=False)
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get(
    "/metrics",
    opt={"open": "metrics", "scope": "read"},
    include_in_schema=False,
    sync_to_thread=True,
)
def metrics() -> Response[bytes]:
    """Prometheus text exposition of every metric of this process, rendered on a worker thread
    (``sync_to_thread``) so a scrape never holds up the event loop."""
    return Response(telemetry.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _platform_routes(platform: PlatformView, health: DependencyMonitor | None) -> list[Any]:
    @get("/readyz", opt={"open": "probe"}, include_in_schema=False, sync_to_thread=False)
    def readyz() -> Response[dict[str, Any]]:
        """Readiness of this process's own modules and of the servers it needs for serving, as
        last checked in the background (remote modules are reported by /v1/modules)."""
        modules = platform.readiness()
        down = health.unavailable() if health is not None else []
        status = _status(platform.draining, all(modules.values()), down)
        body: dict[str, Any] = {"status": status, "modules": modules}
        if health is not None:
            body["dependencies"] = {d.name: d.up for d in health.statuses()}
        if down:
            body["unavailable"] = down
        ready = status == "ready"
        return Response(
            body, status_code=200 if ready else 503, headers={} if ready else {"Retry-After": "1"}
        )

    @get(
        "/v1/modules",
        opt={"scope": "read"},
        sync_to_thread=False,
        media_type=MediaType.JSON,
        tags=["platform"],
    )
    def modules() -> ModulesAnswer:
        """Where each module runs, its contract version and its circuit breaker; each server
        this process uses and whether it answers."""
        statuses = health.statuses() if health is not None else []
        return ModulesAnswer(modules=platform.module_statuses(), dependencies=statuses)

    return [readyz, modules]


def _status(draining: bool, modules_ready: bool, down: list[str]) -> str:
    if draining:
        return "draining"
    if not modules_ready:
        return "starting"
    return "unavailable" if down else "ready"


def _guards(guards: Sequence[Any], middleware: Sequence[Any]) -> list[Any]:
    """``guards`` without :func:`auth_guard` when an :class:`AuthMiddleware` checks scopes: the
    same check twice, and litestar copies the route handler for every guard call."""
    if any(isinstance(m, AuthMiddleware) for m in middleware):
        return [g for g in guards if g is not auth_guard]
    return list(guards)


def create_http_app(
    *,
    settings: Settings,
    platform: PlatformView,
    route_handlers: Sequence[Any],
    middleware: Sequence[Any] = (),
    guards: Sequence[Any] = (),
    on_startup: Sequence[Callable[[], Awaitable[None]]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
    debug: bool = False,
    dependencies: DependencyMonitor | None = None,
) -> Litestar:
    """Build the HTTP app. ``middleware`` (auth, idempotency...) runs after routing, inside the
    request context and the server span (:class:`RequestMiddleware`, around everything).

    Every route also answers ``HEAD`` (as ``GET``, without the body) and ``OPTIONS``; every error,
    whatever raised it, is ``{"error", "code", "details"}`` (documented so in the schema).
    ``dependencies`` feeds ``/readyz`` and ``/v1/modules`` the state of the servers in use.
    """
    app = QuarryLitestar(
        route_handlers=[
            healthz,
            metrics,
            *_platform_routes(platform, dependencies),
            *route_handlers,
        ],
        middleware=list(middleware),
        guards=_guards(guards, middleware),
        on_startup=list(on_startup),
        on_shutdown=list(on_shutdown),
        plugins=[StructDefaultsSchemaPlugin(), ErrorResponsesPlugin(), DocstringsPlugin()],
        exception_handlers=exception_handlers,
        request_class=QuarryRequest,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Quarry",
            version="1.0.0",
            # only the schema's routes answer litestar's HTML 404 page, turned into JSON here;
            # an after_request hook on the whole app would run on every request
            openapi_router=Router(
                path="/schema",
                route_handlers=[],
                after_request=json_not_found,
                include_in_schema=False,
                dto=None,
                return_dto=None,
            ),
            render_plugins=[LocalSwaggerRenderPlugin(path="/swagger")],
        ),
        logging_config=None,  # logs go through app.kernel.telemetry's structured handler
        debug=debug,
    )
    kernel_metrics.limit_series(settings.metrics_max_series)
    # Where litestar puts its OpenTelemetry middleware: around the exception handler and router.
    # Several workers share one port: each answer says which one served it.
    worker = [(WORKER_HEADER, str(os.getpid()))] if settings.workers > 1 else []
    # Direct routes need every middleware to be one litestar builds from an instance.
    layers = [m for m in middleware if isinstance(m, ASGIMiddleware)]
    direct = DirectRoutes(
        app.asgi_handler,
        app.routes if len(layers) == len(middleware) else [],
        middleware=layers,
        max_body_bytes=settings.max_body_bytes,
    )
    app.asgi_handler = RequestMiddleware(
        direct, exclude=["/metrics", *PROBE_PATHS, RPC_PREFIX], headers=worker
    )
    return app
