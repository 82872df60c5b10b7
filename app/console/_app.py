"""The console's routes: one router under ``/ui`` with its own authentication and error pages,
its static files, and ``GET /`` sending browsers to it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from litestar import Router, get
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Redirect, Response
from litestar.static_files import create_static_files_router
from litestar.types import ExceptionHandlersMap

from app.console._access import access_handlers
from app.console._clients import Clients
from app.console._deployments import deployment_handlers
from app.console._features import feature_handlers
from app.console._models import model_handlers
from app.console._monitoring import monitoring_handlers
from app.console._overview import overview_handlers
from app.console._render import error_page, not_found
from app.console._session import PREFIX, ConsoleAuthMiddleware
from app.console._training import training_handlers
from app.kernel.auth import KeyStore
from app.kernel.http.app import PlatformView
from app.kernel.http.ratelimit import RateLimiter
from contracts.common import QuarryError

__all__ = ["OWN_AUTH_PATHS", "PREFIX", "console_routes"]

OWN_AUTH_PATHS = ("/", PREFIX, f"{PREFIX}/*")
"""Paths the console authenticates itself (by its cookie); ``/`` only redirects here."""

_STATIC = Path(__file__).parent / "static"


async def _as_is(response: Response[Any]) -> Response[Any]:
    """Keeps the console's HTML pages (404s included) as they are (the app turns other HTML
    404s into JSON errors)."""
    return response


@get("/", opt={"scope": None}, include_in_schema=False, sync_to_thread=False)
def to_console() -> Redirect:
    """Browsers opening the server's root land on the console."""
    return Redirect(PREFIX, status_code=302)


@get("/{rest:path}", sync_to_thread=False)
def unknown(rest: FromPath[str]) -> Response[str]:
    """Any other console path: the console's 404 page."""
    raise not_found(f"page {PREFIX}{rest} in the console")


def console_routes(
    clients: Mapping[str, Any],
    platform: PlatformView,
    keys: KeyStore,
    *,
    auth_required: bool,
    limiter: RateLimiter | None = None,
) -> list[Any]:
    """The console's route handlers over the contract ``clients`` (module name -> client, as the
    composition root binds them), to be served with the kernel's middleware told that
    :data:`OWN_AUTH_PATHS` authenticate themselves; ``limiter`` limits console requests as the
    kernel's middleware limits the API's."""
    q = Clients(clients)
    handlers = [
        *access_handlers(keys, required=auth_required),
        *overview_handlers(q, platform),
        *model_handlers(q),
        *deployment_handlers(q),
        *monitoring_handlers(q),
        *training_handlers(q),
        *feature_handlers(q),
        unknown,
    ]
    errors: ExceptionHandlersMap = {
        QuarryError: error_page,
        HTTPException: error_page,
        Exception: error_page,
    }
    console = Router(
        PREFIX,
        route_handlers=handlers,
        middleware=[ConsoleAuthMiddleware(keys, required=auth_required, limiter=limiter)],
        exception_handlers=errors,
        after_request=_as_is,
        include_in_schema=False,
    )
    static = create_static_files_router(
        f"{PREFIX}/static",
        directories=[_STATIC],
        opt={"scope": None},
        include_in_schema=False,
        name="console-static",
    )
    return [console, static, to_console]
