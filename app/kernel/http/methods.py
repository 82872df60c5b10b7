"""HTTP methods every route gets from the kernel: ``HEAD`` as ``GET`` and a truthful ``Allow``.

- ``HEAD`` is answered by the route's ``GET`` handler with the body dropped (status and headers,
  ``Content-Length`` included, stay as ``GET`` gives them), so every readable resource answers it
  (RFC 9110 §9.3.2); litestar on its own answers 405.
- ``Allow`` on ``OPTIONS`` answers lists every method of the path. litestar 2 builds the automatic
  ``OPTIONS`` handler when the first handler of a path registers and never updates it, so a path
  with ``GET`` and ``PATCH`` handlers claims ``GET, OPTIONS`` (litestar issue #4169, fixed in 3).
  ``Allow`` on 405 answers is right but, like ``OPTIONS``, now also names ``HEAD``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders
from litestar.routes import HTTPRoute
from litestar.types import Message, Scope, Send

__all__ = ["QuarryLitestar", "allow_header", "truthful_options_allow"]


def allow_header(methods: Iterable[str]) -> str:
    """The ``Allow`` value for a path handling ``methods`` (``HEAD`` wherever ``GET`` is)."""
    names = {m.strip().upper() for m in methods} - {""}
    if "GET" in names:
        names.add("HEAD")
    return ", ".join(sorted(names))


class QuarryLitestar(Litestar):
    """litestar's app with ``HEAD`` served by ``GET`` handlers, without a body, and a truthful
    ``Allow`` on ``OPTIONS`` answers."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Run a ``HEAD`` request as ``GET`` and drop whatever body the answer carries; correct
        the ``Allow`` of an ``OPTIONS`` answer. Other requests' ``send`` is not wrapped (a
        ``before_send`` hook would wrap every request's)."""
        if scope["type"] == "http":
            method = scope.get("method")
            if method == "HEAD":
                scope = {**scope, "method": "GET"}
                send = _bodiless(send)
            elif method == "OPTIONS":
                send = _allowing(send, scope)
        await super().__call__(scope, receive, send)


def _bodiless(send: Send) -> Send:
    finished = False

    async def send_head(message: Message) -> None:
        nonlocal finished
        if message["type"] != "http.response.body":
            await send(message)
            return
        if not finished and not message.get("more_body", False):
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return send_head


def _allowing(send: Send, scope: Scope) -> Send:
    async def send_allow(message: Message) -> None:
        await truthful_options_allow(message, scope)
        await send(message)

    return send_allow


async def truthful_options_allow(message: Message, scope: Scope) -> None:
    """``Allow`` of litestar's automatic ``OPTIONS`` answers, corrected in ``message``."""
    if message["type"] != "http.response.start" or scope.get("method") != "OPTIONS":
        return
    template = scope.get("path_template")
    app: Any = scope.get("app")
    if template is None or not isinstance(app, Litestar):
        return
    for route in app.routes:
        if isinstance(route, HTTPRoute) and route.path_format == template:
            headers = MutableScopeHeaders.from_message(message)
            if "allow" in headers:
                headers["allow"] = allow_header(route.methods)
            return
