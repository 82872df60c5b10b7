"""The request class of the app: litestar's, with body parsing that cannot fail with a 500."""

from __future__ import annotations

from typing import Any

from litestar import Request

from app.kernel.http.bodies import too_deep

__all__ = ["QuarryRequest"]


class QuarryRequest(Request[Any, Any, Any]):
    """A litestar request whose JSON and msgpack bodies parse to a value or a 400.

    msgspec raises ``RecursionError`` for documents nested deeper than the interpreter's stack
    allows (``[[[[...]]]]``); that is the client's input, not a server fault.
    """

    async def json(self) -> Any:
        """The body decoded from JSON."""
        try:
            return await super().json()
        except RecursionError:
            raise too_deep("JSON") from None

    async def msgpack(self) -> Any:
        """The body decoded from msgpack."""
        try:
            return await super().msgpack()
        except RecursionError:
            raise too_deep("msgpack") from None
