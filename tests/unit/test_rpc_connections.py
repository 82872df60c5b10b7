"""The RPC client's pooled HTTP/1.1 connections, against scripted servers on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from app.kernel.rpc.connections import ConnectionPool, TransportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A TCP server on 127.0.0.1 running ``script(server)`` per connection, counting them."""

    def __init__(self, script: Callable[[Scripted], Handler]) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(self)(reader, writer)
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request's head and body (``None`` when the client closed the connection)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@asynccontextmanager
async def scripted(script: Callable[[Scripted], Handler]) -> AsyncIterator[Scripted]:
    server = Scripted(script)
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/base"
    async with listening:
        yield server


def answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-msgpack\r\n"
    return head + b"".join(extra) + b"content-length: %d\r\n\r\n" % len(body) + body


def echoing(server: Scripted) -> Handler:
    """Answers each request of a connection with its body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await server.read_request(reader)) is not None:
            writer.write(answer(request.split(b"\r\n\r\n", 1)[1]))
            await writer.drain()

    return handle


async def post(pool: ConnectionPool, body: bytes, path: str = "/m") -> tuple[int, bytes]:
    response = await pool.post(path, [("x-extra", "1")], body)
    try:
        return response.status, await response.read()
    finally:
        await response.aclose()


async def test_answers_reuse_one_keep_alive_connection() -> None:
    async with scripted(echoing) as server:
        pool = ConnectionPool(server.url, headers=[("authorization", "Bearer t")])
        answers = [await post(pool, b"x" * n) for n in (1, 10, 0)]
        await pool.aclose()

    assert answers == [(200, b"x"), (200, b"x" * 10), (200, b"")]
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /base/m HTTP/1.1\r\n")
    for line in (b"host: 127.0.0.1:", b"authorization: Bearer t", b"x-extra: 1"):
        assert line in first


async def test_concurrent_requests_get_their_own_connections() -> None:
    async with scripted(echoing) as server:
        pool = ConnectionPool(server.url)
        answers = await asyncio.gather(*(post(pool, str(i).encode()) for i in range(5)))
        await pool.aclose()

    assert [body for _, body in answers] == [str(i).encode() for i in range(5)]
    assert server.connections == 5


def chunked(server: Scripted) -> Handler:
    """A chunked answer of 3 MiB (more than the pool reads ahead), in pieces."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(48):
                piece = bytes([i]) * 65536
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    return handle


async def test_a_chunked_answer_arrives_whole_and_in_pieces() -> None:
    async with scripted(chunked) as server:
        pool = ConnectionPool(server.url)
        response = await pool.post("/s", [], b"")
        pieces = [piece async for piece in response.iter_bytes()]
        await response.aclose()
        status, whole = await post(pool, b"")
        await pool.aclose()

    assert b"".join(pieces) == whole == b"".join(bytes([i]) * 65536 for i in range(48))
    assert (status, server.connections) == (200, 1)


def closing_after_each(server: Scripted) -> Handler:
    """Answers one request per connection, then closes it (as a server ending keep-alive)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await server.read_request(reader)
        if request is not None:
            writer.write(answer(b"ok"))
            await writer.drain()

    return handle


async def test_a_connection_the_server_closed_is_replaced() -> None:
    async with scripted(closing_after_each) as server:
        pool = ConnectionPool(server.url)
        answers = [await post(pool, b"a") for _ in range(3)]
        await pool.aclose()

    assert answers == [(200, b"ok")] * 3
    assert server.connections == 3


async def test_an_answer_left_unread_closes_its_connection() -> None:
    async with scripted(echoing) as server:
        pool = ConnectionPool(server.url)
        response = await pool.post("/m", [], b"unread")
        await response.aclose()
        assert await post(pool, b"next") == (200, b"next")
        await pool.aclose()

    assert server.connections == 2


def stalling(server: Scripted) -> Handler:
    """Sends the head of an answer and a part of its body, then nothing more."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await reader.read()  # until the client gives up and closes

    return handle


async def test_a_cancelled_exchange_closes_its_connection() -> None:
    async with scripted(stalling) as server:
        pool = ConnectionPool(server.url)
        response = await pool.post("/m", [], b"")
        reading = asyncio.ensure_future(response.read())
        await asyncio.sleep(0)  # let the read start waiting for the rest of the body
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await response.aclose()
        second = await pool.post("/m", [], b"")
        await second.aclose()
        await pool.aclose()

    assert server.connections == 2


@pytest.mark.parametrize(
    "reply",
    [
        b"not http at all\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",  # cut short
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",  # cut chunk
        b"",  # closed without a word
    ],
)
async def test_broken_answers_are_transport_errors(reply: bytes) -> None:
    def broken(server: Scripted) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(reply)
            await writer.drain()

        return handle

    async with scripted(broken) as server:
        pool = ConnectionPool(server.url)
        with pytest.raises(TransportError):
            await post(pool, b"x")
        await pool.aclose()


async def test_a_refused_connection_is_a_transport_error() -> None:
    async with scripted(echoing) as server:
        url = server.url
    pool = ConnectionPool(url)  # nothing listens there any more
    with pytest.raises(TransportError, match=r"Connect|refused"):
        await post(pool, b"x")


async def test_a_header_cannot_start_another() -> None:
    async with scripted(echoing) as server:
        pool = ConnectionPool(server.url)
        for value in ("a\r\nx-evil: 1", "a\nb", "a\0b"):
            with pytest.raises(ValueError, match="line break"):
                await pool.post("/m", [("x-request-id", value)], b"")
        assert await post(pool, b"fine") == (200, b"fine")
        await pool.aclose()
    assert len(server.requests) == 1
    assert b"x-evil" not in server.requests[0]


def test_only_http_urls_are_accepted() -> None:
    for url in ("ftp://host/x", "host:80", "http://"):
        with pytest.raises(ValueError, match="not an http"):
            ConnectionPool(url)
