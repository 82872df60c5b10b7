"""Pages from Jinja2 templates, and the console's error pages."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import jinja2
from litestar import MediaType, Request, get
from litestar.exceptions import HTTPException
from litestar.params import FromQuery
from litestar.response import Response

from app.console._session import NOBODY, csrf_token, set_session_cookies
from app.kernel.auth import Principal
from app.kernel.errors import error_for_status, status_for
from contracts.common import InternalError, NotFound, QuarryError

__all__ = ["error_page", "list_page", "not_found", "page", "principal_of", "render"]

_log = logging.getLogger("quarry.console")

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
_TITLES = {400: "Not accepted", 403: "Not allowed", 404: "Not found", 409: "Conflict"}


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("app.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["epoch"] = _epoch
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    env.filters["kind"] = _kind
    return env


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _epoch(value: float | None) -> str:
    """Seconds since the epoch, as :func:`_when` writes a time."""
    return "—" if value is None else _when(datetime.fromtimestamp(value, tz=UTC))


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _kind(value: object) -> str:
    """A tagged Struct's tag (a transform's kind), else its class name."""
    config = getattr(type(value), "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return str(tag) if tag else type(value).__name__


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """Who the request acts as (set by the console's middleware)."""
    user = request.scope.get("user")
    return user if isinstance(user, Principal) else NOBODY


def render(request: Request[Any, Any, Any], template: str, **values: Any) -> str:
    """``template`` rendered with ``values`` and what every page needs (who, what they may do,
    the CSRF token for forms)."""
    principal = principal_of(request)
    return (
        _environment()
        .get_template(template)
        .render(
            user=principal,
            can=principal.allows,
            logged_in=principal.key_id not in (NOBODY.key_id, "anonymous"),
            csrf=csrf_token(request),
            path=request.url.path,
            query=request.query_params,
            **values,
        )
    )


def page(
    request: Request[Any, Any, Any],
    template: str,
    *,
    status: int = 200,
    key: str | None = None,
    **values: Any,
) -> Response[str]:
    """An HTML page answer, with the console's security headers and session cookies."""
    response = Response(
        render(request, template, **values),
        status_code=status,
        media_type=MediaType.HTML,
        headers=SECURITY_HEADERS,
    )
    set_session_cookies(request, response, key=key)
    return response


def list_page(
    path: str, template: str, title: str, fetch: Callable[[str | None], Awaitable[Any]]
) -> Any:
    """``GET <path>?cursor=``: one page of a list (``fetch(cursor)``) rendered as ``found``."""

    @get(path, name=f"console-list-{template}")
    async def listing(
        request: Request[Any, Any, Any], cursor: FromQuery[str | None] = None
    ) -> Response[str]:
        return page(request, template, title=title, found=await fetch(cursor or None))

    return listing


def error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    """The console's page for an error: the module's message (never a stack trace)."""
    if not isinstance(exc, QuarryError):
        exc = _unexpected(request, exc)
    status = status_for(exc)
    title = _TITLES.get(status, "Something went wrong" if status >= 500 else "Not accepted")
    response = page(request, "error.html", status=status, title=title, error=exc)
    retry = getattr(exc, "retry_after", None)
    if status in (429, 503) and retry:
        response.headers["retry-after"] = str(int(retry))
    return response


def not_found(what: str) -> NotFound:
    """The console's 404 for a page that does not exist."""
    return NotFound(f"there is no {what}")


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> QuarryError:
    if isinstance(exc, HTTPException):  # litestar's own: a bad form field, a body too large
        if exc.status_code == 404:
            return not_found("such page in the console")
        return error_for_status(exc.status_code, str(exc.detail))
    _log.error("console page failed", exc_info=exc, extra={"path": request.url.path})
    return InternalError("the console could not show this page; the server log has the details")
