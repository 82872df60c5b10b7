"""uvicorn's httptools protocol with the bounds on a request's head that granian has and uvicorn
leaves out, so that ``QUARRY_HTTP_SERVER`` changes no limit a client can reach:

- a request line and headers over :attr:`~BoundedHttpToolsProtocol.max_head` bytes get 431 and
  the connection closes;
- a connection whose request line and headers take longer than
  :attr:`~BoundedHttpToolsProtocol.header_timeout_s` to arrive (counted from the connection's
  start, or from the first byte of a later request on it) is closed.
"""

from __future__ import annotations

import asyncio

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BoundedHttpToolsProtocol"]

_REFUSED = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """One connection, as uvicorn's own protocol serves it, with its request heads bounded."""

    max_head: int
    """Bytes a request's line and headers may take (set by the subclass the server makes, from
    :data:`app.cli.http_server.MAX_HEAD`, the one limit both servers apply)."""
    header_timeout_s: float
    """Seconds a request's line and headers may take to arrive (likewise, from
    :data:`app.cli.http_server.HEADER_TIMEOUT_MS`)."""

    _head = 0
    _over = False
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer when the parser fails: 431 when the failure was :meth:`_count`'s."""
        if not self._over:
            super().send_400_response(msg)
            return
        self.transport.write(_REFUSED)
        self.transport.close()

    def _count(self, size: int) -> None:
        self._head += size
        if self._head > self.max_head:
            self._over = True
            raise httptools.HttpParserError("request head too large")  # stops the parser

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
