"""The HTTP servers `quarry serve` runs (granian and uvicorn), each on a real listening socket:
they answer, drain on SIGTERM as documented, stop when asked, and bound a request's head alike."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.cli import http_server
from app.cli.http_server import MAX_HEAD, SERVERS, Drain, HttpServer
from app.cli.listen import listen

every_server = pytest.mark.parametrize("kind", SERVERS)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class SlowApp:
    """``/slow`` answers once :attr:`release` is set; every other path at once, echoing the body
    and the server's view of the request."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # uvicorn's; granian's is not used
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            self.arrived.set()
            await self.release.wait()
        seen = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} ".encode()
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": seen + body})


def _server(app: SlowApp, kind: str, *, delay_s: float = 0.0) -> tuple[HttpServer, list[str]]:
    drained: list[str] = []
    drain = Drain(delay_s=delay_s, timeout_s=10, on_start=lambda: drained.append("started"))
    return HttpServer(app, listen("127.0.0.1", 0), kind=kind, drain=drain), drained


def _url(server: HttpServer) -> str:
    return f"http://127.0.0.1:{server.sock.getsockname()[1]}"


async def _refused(port: int, within_s: float = 10) -> bool:
    """Whether connecting to ``port`` is refused within ``within_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except (ConnectionRefusedError, ConnectionResetError):  # reset: queued as it closed
            return True
        writer.close()
        await asyncio.sleep(0.02)
    return False


@every_server
async def test_it_answers_requests_with_their_method_path_query_and_body(kind: str) -> None:
    app = SlowApp()
    server, _ = _server(app, kind)
    serving = asyncio.create_task(server.serve())
    await server.started.wait()
    async with httpx.AsyncClient(base_url=_url(server)) as client:
        answers = await asyncio.gather(
            *(client.post(f"/echo/{n}?q={n}", content=b"x" * n) for n in range(1, 40))
        )
    server.stop()
    await serving
    for n, answer in enumerate(answers, start=1):
        assert answer.status_code == 200
        assert answer.content == f"POST /echo/{n} q={n} ".encode() + b"x" * n


@every_server
@pytest.mark.parametrize("delay_s", [0.0, 0.3])
async def test_sigterm_drains_then_closes_the_port_while_the_request_in_flight_finishes(
    kind: str, delay_s: float
) -> None:
    app = SlowApp()
    server, drained = _server(app, kind, delay_s=delay_s)
    port = server.sock.getsockname()[1]
    received: list[int] = []  # uvicorn raises the signal it handled again once it has stopped
    previous = signal.signal(signal.SIGTERM, lambda number, _frame: received.append(number))
    try:
        await _drain_while_a_request_is_in_flight(app, server, drained, port)
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _drain_while_a_request_is_in_flight(
    app: SlowApp, server: HttpServer, drained: list[str], port: int
) -> None:
    serving = asyncio.create_task(server.serve())
    await server.started.wait()
    async with httpx.AsyncClient(base_url=_url(server), timeout=20) as client:
        slow = asyncio.create_task(client.get("/slow"))
        await app.arrived.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        assert await _refused(port), "the port still accepts connections after the drain delay"
        assert drained == ["started"]
        assert not slow.done()
        app.release.set()
        answer = await slow
    await serving
    assert answer.status_code == 200
    assert answer.content == b"GET /slow  "


@every_server
async def test_stop_returns_and_leaves_signals_as_they_were(kind: str) -> None:
    before = signal.getsignal(signal.SIGTERM)
    server, drained = _server(SlowApp(), kind)
    address = server.sock.getsockname()
    serving = asyncio.create_task(server.serve())
    await server.started.wait()
    server.stop()
    await serving
    assert drained == []
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()
    server.sock.close()


@every_server
async def test_headers_beyond_the_limit_get_431_and_the_next_request_is_served(kind: str) -> None:
    server, _ = _server(SlowApp(), kind)
    serving = asyncio.create_task(server.serve())
    await server.started.wait()
    async with httpx.AsyncClient(base_url=_url(server)) as client:
        refused = await client.get("/big", headers={"x-big": "a" * MAX_HEAD})
        answered = await client.get("/small", headers={"x-big": "a" * (MAX_HEAD // 2)})
    server.stop()
    await serving
    assert refused.status_code == 431
    assert answered.status_code == 200
    assert answered.content.startswith(b"GET /small")


@every_server
async def test_a_connection_whose_headers_never_finish_is_closed(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_server, "HEADER_TIMEOUT_MS", 200)
    server, _ = _server(SlowApp(), kind)
    serving = asyncio.create_task(server.serve())
    await server.started.wait()
    host, port = server.sock.getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /slowloris HTTP/1.1\r\nHost: x\r\nx-one: 1\r\n")  # no blank line
    await writer.drain()
    try:
        rest = await asyncio.wait_for(reader.read(), 30)  # what the server sends until it closes
    except ConnectionResetError:
        rest = b""
    writer.close()
    async with httpx.AsyncClient(base_url=_url(server)) as client:
        answered = await client.get("/after")
    server.stop()
    await serving
    assert b"200" not in rest  # closed (or refused with 408), never served
    assert answered.status_code == 200
