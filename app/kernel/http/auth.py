"""Who is calling, how often, and with which scope: authentication middleware and the scope guard.

:class:`AuthMiddleware` reads ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``), decides the
:class:`~app.kernel.auth.Principal`, applies the rate limit and puts the principal into
``scope["user"]`` (``request.user``) and the call context. Litestar runs middleware after routing,
so the route is known there, and the middleware also checks that the principal holds the route's
scope, read from the handler's merged ``opt`` (raised, so it answers through the app's exception
handlers). :func:`auth_guard` makes the same check as a litestar guard, for apps that want it;
:func:`~app.kernel.http.app.create_http_app` leaves it out next to this middleware, because
litestar copies the route handler for every guard call (~7 % of a prediction's event-loop CPU).

Rules, in order:

1. ``/rpc/...`` always needs the service token or a valid key, whatever ``required`` says; so
   does ``/metrics`` when metrics auth is on (:func:`metrics_auth_required`).
2. Open paths (probes, ``/metrics`` when metrics auth is off, the OpenAPI schema and Swagger UI)
   need nothing; a key sent there is ignored. The schema is open because it describes routes,
   not data, and Swagger UI has to load before a user can type a key into it.
3. A presented key that is not valid is a 401, even when keys are not required.
4. No key: a 401 when keys are required; otherwise the request acts as an anonymous principal
   holding every scope (rate-limited by client address).
5. The route's scope: ``opt={"scope": "predict"}``; without one, ``read`` for GET/HEAD/OPTIONS and
   ``admin`` for everything else; ``opt={"scope": None}`` leaves the check to the handler (RPC,
   where each contract method declares its own scope; see :func:`app.kernel.auth.check_scope`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.kernel import context
from app.kernel.auth import (
    ALL_SCOPES,
    ANONYMOUS_PRINCIPAL,
    SERVICE_PRINCIPAL,
    KeyStore,
    Principal,
    check_scope,
    verify_service_token,
)
from app.kernel.http.context import send_error
from app.kernel.http.ratelimit import RateLimiter, rate_limiter
from app.kernel.settings import Settings
from contracts.common import InternalError, QuarryError, Unauthenticated

__all__ = [
    "AuthMiddleware",
    "auth_guard",
    "auth_middleware",
    "default_open_paths",
    "metrics_auth_required",
    "required_scope",
]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_UNSET: Any = object()
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
METRICS_PATH = "/metrics"


def metrics_auth_required(settings: Settings, host: str | None = None) -> bool:
    """Whether a scrape of ``/metrics`` needs a ``read`` key or the service token
    (``QUARRY_METRICS_AUTH``; ``auto`` does as QUARRY_AUTH does for a server bound to ``host``).

    Label values are bounded, but they still name models, deployments and modules: a public
    server keeps them to its key holders unless told otherwise.
    """
    if settings.metrics_auth != "auto":
        return settings.metrics_auth == "on"
    return settings.auth_required(host)


def default_open_paths(settings: Settings, host: str | None = None) -> frozenset[str]:
    """Paths open without a key: probes (``QUARRY_OPEN_PROBES``), ``/metrics`` (unless
    :func:`metrics_auth_required`) and the OpenAPI schema with Swagger UI (always).

    An entry ending in ``/*`` opens everything under that prefix; any other entry is exact.
    """
    paths = {"/schema", "/schema/*"}
    if settings.open_probes:
        paths |= {"/healthz", "/readyz", "/v2/health/*"}
    if not metrics_auth_required(settings, host):
        paths.add(METRICS_PATH)
    return frozenset(paths)


class AuthMiddleware(ASGIMiddleware):
    """Authenticates every request and rate-limits it per key (or client address).

    Create one instance per app and list it in ``Litestar(middleware=[...])``; litestar builds each
    route's stack from that one instance, so the rate limiter is shared by every route.
    """

    def __init__(
        self,
        *,
        required: bool,
        keys: KeyStore | None,
        service_token: str | None = None,
        open_paths: Iterable[str] = (),
        keyed_paths: Iterable[str] = (),
        limiter: RateLimiter | None = None,
    ) -> None:
        self.required = required
        self.keys = keys
        self.service_token = service_token or None
        self.limiter = limiter if limiter is not None and limiter.enabled else None
        paths = set(open_paths)
        self._open_exact = frozenset(p for p in paths if not p.endswith("/*"))
        self._open_prefixes = tuple(sorted(p[:-1] for p in paths if p.endswith("/*")))
        self._keyed = frozenset(keyed_paths)
        """Exact paths that need a key even when keys are not ``required`` (``/metrics``)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Answer 401/429 straight away; raise 403 when the principal lacks the route's scope;
        else run the app as the request's principal."""
        try:
            principal, limited = self._authenticate(scope)
            if limited and self.limiter is not None:
                await self.limiter.enforce(_limit_key(scope, principal))
        except QuarryError as exc:
            await _reject(scope, send, exc)
            return
        scope["user"] = principal
        handler = scope.get("route_handler")
        if handler is not None:
            method = scope.get("method")
            needed = required_scope(handler, method if isinstance(method, str) else None)
            if needed is not None:
                check_scope(principal, needed)
        token = context.enter(
            msgspec.structs.replace(context.current(), principal=principal.key_id)
        )
        try:
            await next_app(scope, receive, send)
        finally:
            context.leave(token)

    def is_open(self, path: str) -> bool:
        """Whether ``path`` needs no key (``/rpc`` never is open)."""
        return path in self._open_exact or path.startswith(self._open_prefixes)

    def _authenticate(self, scope: Scope) -> tuple[Principal, bool]:
        """The caller, and whether the rate limit applies (not on open paths nor to services)."""
        path = scope["path"]
        keyed = path == "/rpc" or path.startswith("/rpc/") or path in self._keyed
        if not keyed and self.is_open(path):
            return ANONYMOUS_PRINCIPAL, False
        token = _presented_key(scope)
        if token is not None:
            principal = self._verify(token)
        elif keyed or self.required:
            raise Unauthenticated(
                "this request needs an API key: send 'Authorization: Bearer <key>'",
                details={"path": path},
            )
        else:
            principal = ANONYMOUS_PRINCIPAL
        return principal, principal is not SERVICE_PRINCIPAL

    def _verify(self, token: str) -> Principal:
        if verify_service_token(token, self.service_token):
            return SERVICE_PRINCIPAL
        principal = self.keys.verify(token) if self.keys is not None else None
        if principal is None:
            raise Unauthenticated("the API key is not valid or has been revoked")
        return principal


def auth_middleware(
    settings: Settings,
    keys: KeyStore,
    *,
    host: str | None = None,
    limiter: RateLimiter | None = None,
    own_auth_paths: Iterable[str] = (),
) -> AuthMiddleware:
    """The :class:`AuthMiddleware` that ``settings`` describe for a server bound to ``host``.

    ``own_auth_paths`` (entries as in :func:`default_open_paths`) authenticate their requests
    themselves (the web console, whose browser sends its key in a cookie): this middleware
    lets them through as the anonymous principal.
    """
    return AuthMiddleware(
        required=settings.auth_required(host),
        keys=keys,
        service_token=settings.service_token,
        open_paths=default_open_paths(settings, host) | frozenset(own_auth_paths),
        keyed_paths=[METRICS_PATH] if metrics_auth_required(settings, host) else [],
        limiter=limiter if limiter is not None else rate_limiter(settings),
    )


def required_scope(route_handler: BaseRouteHandler, method: str | None) -> str | None:
    """The scope a route needs (``None``: the handler checks scopes itself)."""
    declared = route_handler.opt.get("scope", _UNSET)
    if declared is _UNSET:
        return "read" if method in _SAFE_METHODS else "admin"
    if declared is None:
        return None
    if str(declared) not in ALL_SCOPES:
        raise InternalError(
            f"route {route_handler.handler_name!r} declares unknown scope {declared!r}",
            details={"scope": str(declared)},
        )
    return str(declared)


async def auth_guard(
    connection: ASGIConnection[Any, Any, Any, Any], route_handler: BaseRouteHandler
) -> None:
    """Litestar guard: the principal :class:`AuthMiddleware` found must hold the route's scope.

    It is ``async`` on purpose: litestar runs sync guards on a worker thread, a hop per request.

    Raises :class:`~contracts.common.PermissionDenied` (403) naming the scope it needs, or
    :class:`~contracts.common.Unauthenticated` when no principal was set (middleware missing).
    """
    method = connection.scope.get("method")
    needed = required_scope(route_handler, method if isinstance(method, str) else None)
    if needed is None:
        return
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise Unauthenticated("no credentials were checked for this request")
    check_scope(principal, needed)


def _presented_key(scope: Scope) -> str | None:
    api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return api_key


def _limit_key(scope: Scope, principal: Principal) -> str:
    if principal is not ANONYMOUS_PRINCIPAL:
        return f"key:{principal.key_id}"
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


async def _reject(scope: Scope, send: Send, error: QuarryError) -> None:
    if scope["type"] == ScopeType.WEBSOCKET:
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        return
    await send_error(send, error, _CHALLENGE if isinstance(error, Unauthenticated) else None)
