"""Direct routes: the hottest routes answered ahead of litestar's router, with the same checks.

A route handler declares a direct handler with ``opt={"direct": handler}``: an ``async``
function taking the ASGI scope, the value of the route's one path parameter (the last segment)
and the request body, and answering the body and media type of a ``200``. A matching request
(the handler's method, the path's prefix and one segment after it) skips litestar's router,
kwargs resolution and response objects, which cost a one-row prediction more than its model.
What a request goes through is otherwise the same: the app's middleware (authentication, the
route's scope, the rate limit, idempotency keys) runs as litestar would run it, the body limit
answers 413, and every error answers the shape and status the exception handlers give. The
litestar route stays: it documents the route in the OpenAPI document and answers every request
the direct path does not match (``HEAD``, a trailing slash, more segments).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from litestar.middleware import ASGIMiddleware
from litestar.routes import HTTPRoute

from app.kernel.errors import error_for_status
from app.kernel.http.context import send_error
from app.kernel.http.errors import TOO_LARGE, contract_error
from contracts.common import QuarryError

__all__ = ["DirectHandler", "DirectRoutes", "direct_routes"]

DirectHandler = Callable[[Any, str, bytes], Awaitable[tuple[bytes, str]]]
"""``(scope, path parameter, body) -> (answer body, media type)`` of a ``200`` answer."""


@dataclass(frozen=True, slots=True)
class _Route:
    template: str
    parameter: str
    route_handler: Any
    app: Any
    """The endpoint wrapped in the app's middleware."""


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


def direct_routes(routes: Iterable[Any]) -> list[tuple[str, str, str, DirectHandler, Any]]:
    """``(method, prefix, parameter, handler, route handler)`` of every route handler declaring
    a direct handler; its path must end in its one parameter (``/v1/predict/{model_ref:str}``)."""
    found: list[tuple[str, str, str, DirectHandler, Any]] = []
    for route in routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            direct = handler.opt.get("direct")
            if direct is None:
                continue
            prefix, _, last = route.path_format.rpartition("/")
            if len(route.path_parameters) != 1 or not (last.startswith("{") and "{" not in prefix):
                raise ValueError(f"a direct route ends in its one parameter: {route.path!r}")
            for method in handler.http_methods:
                found.append((str(method), prefix + "/", last[1:-1], direct, handler))
    return found


class DirectRoutes:
    """ASGI layer answering direct routes itself and passing every other request to ``app``."""

    def __init__(
        self,
        app: Any,
        routes: Iterable[Any],
        *,
        middleware: Sequence[ASGIMiddleware],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self._max_body = max_body_bytes
        self._routes: dict[tuple[str, str], _Route] = {}
        for method, prefix, parameter, handler, route_handler in direct_routes(routes):
            endpoint: Any = self._endpoint(handler, parameter)
            for layer in reversed(middleware):
                endpoint = layer(endpoint)
            template = f"{prefix}{{{parameter}}}"
            self._routes[(method, prefix)] = _Route(template, parameter, route_handler, endpoint)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._routes and scope["type"] == "http":
            prefix, _, value = scope["path"].rpartition("/")
            route = self._routes.get((scope["method"], prefix + "/")) if value else None
            if route is not None:
                await self._answer(route, value, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, route: _Route, value: str, scope: Any, receive: Any, send: Any) -> None:
        scope["path_template"] = route.template
        scope["path_params"] = {route.parameter: value}
        scope["route_handler"] = route.route_handler
        try:
            await route.app(scope, receive, send)
        except _Disconnected:
            return
        except QuarryError as exc:
            await send_error(send, exc)
        except Exception as exc:
            await send_error(send, contract_error(exc, scope["method"], scope["path"]))

    def _endpoint(self, handler: DirectHandler, parameter: str) -> Any:
        async def endpoint(scope: Any, receive: Any, send: Any) -> None:
            body = await self._body(scope, receive)
            content, media_type = await handler(scope, scope["path_params"][parameter], body)
            headers = [
                (b"content-type", media_type.encode("latin-1")),
                (b"content-length", str(len(content)).encode("latin-1")),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": content})

        return endpoint

    async def _body(self, scope: Any, receive: Any) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self._max_body:
                raise _too_large(scope)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise _too_large(scope)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(scope: Any) -> QuarryError:
    return error_for_status(413, TOO_LARGE, {"path": scope["path"]})
