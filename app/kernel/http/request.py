"""The request class of the app: litestar's, with body parsing that cannot fail with a 500."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException
from litestar.types import Empty

from app.kernel.http.bodies import too_deep

__all__ = ["QuarryRequest"]


class QuarryRequest(Request[Any, Any, Any]):
    """A litestar request whose JSON and msgpack bodies parse to a value or a 400.

    msgspec raises ``RecursionError`` for documents nested deeper than the interpreter's stack
    allows (``[[[[...]]]]``); that is the client's input, not a server fault.
    """

    @property
    def content_length(self) -> int | None:
        """The ``content-length`` header as a number, read from the raw headers: litestar's
        own reads it from its decoded copy of every header, made for this one lookup when
        nothing else asks for headers (RPC, predictions)."""
        cached = self._content_length
        if cached is not Empty:
            return cached
        header = None
        for name, value in self.scope["headers"]:
            if name == b"content-length":
                header = value.decode("latin-1")
                break
        try:
            length = self._content_length = int(header) if header is not None else None
        except ValueError:
            raise ClientException(f"Invalid content-length: {header!r}") from None
        return length

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
