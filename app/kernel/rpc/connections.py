"""A small HTTP/1.1 client for RPC: pooled keep-alive connections to one server, nothing else.

An RPC call is one ``POST`` with a msgpack body to a server Quarry runs; a general HTTP client
does far more per request than that needs (httpx spent ~1 ms of CPU per call on a 2-core VM, most
of the time an RPC added). Here a connection is an :class:`asyncio.Protocol` whose answers
``httptools`` (a C parser, also uvicorn's) parses; the request head is one bytes join of headers
encoded once per module, and a connection goes back to the pool when its answer has been read.

It speaks HTTP/1.1 over TCP or TLS (``https://``), one request at a time per connection; it
follows no redirects, keeps no cookies and goes through no proxy (module-to-module traffic).
Failures to reach the server or to read a whole answer raise :class:`TransportError`; callers
bound every exchange with their own deadline, and a cancelled exchange closes its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Answer", "ConnectionPool", "TransportError"]

_PAUSE_AT = 1 << 20
"""Bytes of a streamed answer read ahead of its consumer before the socket is paused."""
_FORBIDDEN = frozenset(b"\r\n\0")


class TransportError(Exception):
    """The server could not be reached, or its answer was not a whole HTTP answer."""


class Answer:
    """One HTTP answer: status and headers at once, the body as it arrives.

    Read it with :meth:`read` or :meth:`iter_bytes`, then :meth:`aclose` it (which puts the
    connection back in the pool when the body was read to its end, or closes it).
    """

    def __init__(self, connection: _Connection, pool: ConnectionPool) -> None:
        self._connection = connection
        self._pool: ConnectionPool | None = pool
        self.status = connection.status
        self.headers = connection.headers
        """Header names in lower case; a repeated header keeps its last value."""

    async def read(self) -> bytes:
        """The whole body."""
        connection, parts = self._connection, []
        while (chunk := await connection.next_chunk()) is not None:
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body in the pieces it arrives in."""
        connection = self._connection
        while True:
            chunk = await connection.next_chunk()
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        """Give the connection back (or close it when the body was not read to its end)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.release(self._connection)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer with ``httptools``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self._header: bytes = b""
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._keep_alive = False
        self._received = False
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._in_flight = False
        self.loop = asyncio.get_running_loop()
        self._headers_done = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if not self._in_flight:  # an idle connection has nothing to say: do not reuse it
            self.close()
            return
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"malformed HTTP answer: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport: the answer, if any, ends here

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._complete:
            reason = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
            self._fail(TransportError(reason))

    def pause_writing(self) -> None:  # pragma: no cover - only under a slow reader
        pass

    # --- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self._complete = True
        self._in_flight = False
        self._keep_alive = self.parser.should_keep_alive()  # reset once this returns
        self._wake()

    # --- the exchange -----------------------------------------------------------------------

    def send(self, data: Iterable[bytes]) -> None:
        """Write a request and get ready for its answer."""
        self.status, self.headers = 0, {}
        self._headers_done = self._complete = self._keep_alive = self._received = False
        self._chunks.clear()
        self._buffered = 0
        if self.closed or self.transport is None or self.transport.is_closing():
            raise TransportError("the connection is closed")
        self._in_flight = True
        self.transport.writelines(data)

    async def head(self) -> None:
        """Wait for the answer's status line and headers."""
        while not self._headers_done:
            await self._wait()

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body; ``None`` at its end."""
        while not self._chunks:
            if self._complete:
                return None
            await self._wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= _PAUSE_AT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    @property
    def answered(self) -> bool:
        """The answer was read to its end, and the server keeps the connection open."""
        return self._complete and self._keep_alive and not self._chunks and not self.closed

    @property
    def silent(self) -> bool:
        """Nothing at all came back for the request in flight (safe to send it again)."""
        return not self._received

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def _wait(self) -> None:
        """Wait for the parser to make progress; raise the connection's failure, if any."""
        self._raise_failure()
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if not self._complete:
            self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        self._wake()


class ConnectionPool:
    """Keep-alive connections to the server at ``url`` (``http://`` or ``https://``).

    At most ``max_connections`` are open at once (further requests wait for one); at most
    ``max_idle`` are kept between requests, each for at most ``idle_s`` seconds, which stays under
    the keep-alive timeout of the server (uvicorn's default is 5 s) so that the server does not
    close one while a request is on its way. A request written to a reused connection that
    answers nothing at all before closing is sent once more on a new connection: the server
    closed it as idle, and never read the request.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 256,
        max_idle: int = 64,
        idle_s: float = 4.0,
        headers: Iterable[tuple[str, str]] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = (
            (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        )
        self._prefix = parts.path.rstrip("/")
        self._head = b"host: " + parts.netloc.encode("idna") + b"\r\n"
        self._head += b"".join(header_line(name, value) for name, value in headers)
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._idle_s = idle_s
        self._closed = False

    async def post(self, path: str, headers: Iterable[tuple[str, str]], body: bytes) -> Answer:
        """``POST`` ``body`` to ``path`` (under the URL's path) with the pool's headers and
        ``headers``; the answer once its status and headers arrived. :meth:`Answer.aclose` it.

        ``ValueError`` for a header value that could end its line (see :func:`header_line`).
        """
        if self._closed:
            raise TransportError("the client is closed")
        head = [b"POST %s HTTP/1.1\r\n" % (self._prefix + path).encode("latin-1"), self._head]
        head += [header_line(name, value) for name, value in headers]
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        request = (b"".join(head), body)
        await self._slots.acquire()
        try:
            return await self._exchange(request)
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: _Connection) -> None:
        """Put ``connection`` back when its answer was read to the end and the server keeps it
        open; close it otherwise."""
        self._slots.release()
        if connection.answered and not self._closed and len(self._idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            connection.reused = True
            self._idle.append(connection)
        else:
            connection.close()

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        while self._idle:
            with contextlib.suppress(RuntimeError):  # its event loop may be closed already
                self._idle.pop().close()

    async def _exchange(self, request: tuple[bytes, bytes]) -> Answer:
        connection = await self._connection()
        try:
            try:
                connection.send(request)
                await connection.head()
            except TransportError:
                if not (connection.reused and connection.silent):
                    raise
                connection.close()  # closed as idle by the server: it never read the request
                connection = await self._open()
                connection.send(request)
                await connection.head()
        except BaseException:
            connection.close()
            raise
        return Answer(connection, self)

    async def _connection(self) -> _Connection:
        """A live idle connection (the most recently used), else a new one."""
        now, loop = time.monotonic(), asyncio.get_running_loop()
        while self._idle:
            connection = self._idle.pop()
            if (
                not connection.closed
                and now - connection.idle_since < self._idle_s
                and connection.loop is loop
                and connection.transport is not None
                and not connection.transport.is_closing()
            ):
                return connection
            with contextlib.suppress(RuntimeError):  # its event loop may be closed already
                connection.close()
        return await self._open()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection, self._host, self._port, ssl=self._ssl
            )
        except OSError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        return connection


def header_line(name: str, value: str) -> bytes:
    """``name: value\\r\\n`` in latin-1; ``ValueError`` for a line break or NUL in either, or a
    character latin-1 cannot hold (a header must not be able to start another)."""
    line = f"{name}: {value}\r\n".encode("latin-1")
    if _FORBIDDEN.intersection(line[:-2]):
        raise ValueError(f"header {name!r} holds a line break or NUL")
    return line
