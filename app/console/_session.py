"""Who is using the console: the API key kept in a cookie, and the CSRF token of each session.

The browser cannot send ``Authorization`` headers on links and forms, so the console keeps the
key a user logs in with in an HttpOnly, SameSite=Strict cookie (Secure over https) and
authenticates its own requests with it (the kernel's middleware lets ``/ui`` through for that).
The principal it finds goes where the kernel's would (``scope["user"]`` and the call context),
and it checks the route's declared scope as the kernel's middleware does, so every page and
action needs its scope and every contract call sees the key's owner.

Every form carries the session's CSRF token in a hidden field; a POST whose field does not
match the token cookie is refused (403) before it acts. The token is random per login (and per
browser when keys are not required).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.middleware import ASGIMiddleware
from litestar.response import Response
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from app.kernel import context
from app.kernel.auth import ANONYMOUS_PRINCIPAL, KeyStore, Principal, check_scope
from app.kernel.http.auth import required_scope
from app.kernel.http.ratelimit import RateLimiter
from contracts.common import PermissionDenied

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "KEY_COOKIE",
    "NOBODY",
    "ConsoleAuthMiddleware",
    "checked_form",
    "csrf_token",
    "set_session_cookies",
]

PREFIX = "/ui"
KEY_COOKIE = "quarry_console_key"
CSRF_COOKIE = "quarry_console_csrf"
CSRF_FIELD = "csrf"
_PUBLIC = (f"{PREFIX}/login", f"{PREFIX}/static/")
_NEW_TOKEN = "quarry_console_new_csrf"  # noqa: S105 (a state key, not a secret)
"""Where :func:`csrf_token` keeps a token made for this request (in the ASGI scope's state)."""

NOBODY = Principal(key_id="nobody", name="not logged in", scopes=frozenset())
"""The principal of a login page when keys are required: no scope at all."""


class ConsoleAuthMiddleware(ASGIMiddleware):
    """Authenticates console requests by the key cookie; sends the browser to the login form
    when keys are required and it has none (or one that is no longer valid)."""

    def __init__(
        self, keys: KeyStore, *, required: bool, limiter: RateLimiter | None = None
    ) -> None:
        self.keys = keys
        self.required = required
        self.limiter = limiter if limiter is not None and limiter.enabled else None

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Run the page as the cookie's principal, or redirect to the login form."""
        path = scope["path"]
        token = ASGIConnection[Any, Any, Any, Any](scope).cookies.get(KEY_COOKIE)
        principal: Principal | None = None
        if token:
            principal = self.keys.verify(token)
            if principal is None and not path.startswith(_PUBLIC):
                await _to_login(send, path, "expired")
                return
        if principal is None:
            if path.startswith(_PUBLIC):
                principal = NOBODY if self.required else ANONYMOUS_PRINCIPAL
            elif self.required:
                await _to_login(send, path, None)
                return
            else:
                principal = ANONYMOUS_PRINCIPAL
        if self.limiter is not None:  # as the kernel limits the API: per key, else per address
            await self.limiter.enforce(_limit_key(scope, principal))
        scope["user"] = principal
        handler = scope.get("route_handler")
        if handler is not None:  # the scope the page or action declares (the kernel's rule)
            method = scope.get("method")
            needed = required_scope(handler, method if isinstance(method, str) else None)
            if needed is not None:
                check_scope(principal, needed)
        ctx = msgspec.structs.replace(context.current(), principal=principal.key_id)
        with context.use(ctx):
            await next_app(scope, receive, send)


def _limit_key(scope: Scope, principal: Principal) -> str:
    if principal.key_id not in (ANONYMOUS_PRINCIPAL.key_id, NOBODY.key_id):
        return f"key:{principal.key_id}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


async def _to_login(send: Send, path: str, reason: str | None) -> None:
    location = f"{PREFIX}/login?next={quote(path, safe='/')}"
    if reason:
        location += f"&reason={reason}"
    headers: list[tuple[bytes, bytes]] = [
        (b"location", location.encode()),
        (b"content-length", b"0"),
    ]
    if reason:  # a revoked key: forget it
        headers.append((b"set-cookie", f"{KEY_COOKIE}=; Max-Age=0; Path={PREFIX}".encode()))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 303,
        "headers": headers,
    }
    await send(start)
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}
    await send(body)


def csrf_token(request: Request[Any, Any, Any]) -> str:
    """This browser's CSRF token; a new one (set by :func:`set_session_cookies`) if it has none."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing:
        return existing
    state = request.scope.setdefault("state", {})
    token = state.get(_NEW_TOKEN)
    if token is None:
        token = state[_NEW_TOKEN] = secrets.token_urlsafe(32)
    return str(token)


def set_session_cookies(
    request: Request[Any, Any, Any], response: Response[Any], *, key: str | None = None
) -> None:
    """Set the cookies this request decided: a new CSRF token, and the key after a login."""
    secure = request.url.scheme == "https"
    new = request.scope.get("state", {}).get(_NEW_TOKEN)
    if new is not None:
        response.set_cookie(
            CSRF_COOKIE, new, path=PREFIX, httponly=True, secure=secure, samesite="strict"
        )
    if key is not None:
        response.set_cookie(
            KEY_COOKIE, key, path=PREFIX, httponly=True, secure=secure, samesite="strict"
        )


def new_session(request: Request[Any, Any, Any]) -> None:
    """Start a new session's CSRF token (at login and logout)."""
    request.scope.setdefault("state", {})[_NEW_TOKEN] = secrets.token_urlsafe(32)


async def checked_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The POSTed form, once its CSRF field matches this browser's token.

    Raises :class:`~contracts.common.PermissionDenied` (403) when it does not.
    """
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    expected = request.cookies.get(CSRF_COOKIE)
    if not (
        isinstance(sent, str) and expected and hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise PermissionDenied(
            "the form's security token is missing or out of date: reload the page and try again",
            details={"reason": "csrf"},
        )
    return {k: v for k, v in form.items() if isinstance(v, str)}
