"""The HTTP server under ``quarry serve`` and ``quarry quickstart`` (``QUARRY_HTTP_SERVER``).

- ``granian``: hyper on a tokio thread reads and writes the sockets and parses HTTP/1.1 and
  HTTP/2 in Rust; each request reaches this process's event loop as one ASGI call. Measured on
  the predict path of one worker (``bench.serving_baselines``), the event loop then spends its
  time on the app rather than on HTTP, and one worker answers more requests per second than on
  uvicorn.
- ``uvicorn``: HTTP parsed by httptools on the event loop itself; pure Python around a C parser,
  with the same bounds on a request's head as granian's (:mod:`app.cli.uvicorn_protocol`).
  With as many workers as cores, no core is spare for granian's thread, and uvicorn answered
  more.
- ``auto`` (the default) picks between them by that rule
  (:func:`app.kernel.settings.http_server_for`).

Both serve a socket that is already listening (:func:`app.cli.listen.listen`, so a busy port
fails before any work, and several workers can share one port) and stop the same way. The first
SIGTERM or SIGINT calls :attr:`Drain.on_start` (readiness starts failing), and after
:attr:`Drain.delay_s` seconds the listener closes. Requests in flight then get
:attr:`Drain.timeout_s` seconds to finish. A second signal stops at once.

granian is driven through its worker API (the one its own embedded server uses) with the
socket's descriptor, so the descriptor, the signals and the drain stay this module's own; the
dependency is pinned to the minor version this is tested with.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from app.cli.listen import BACKLOG
from app.kernel.settings import HTTP_SERVERS

__all__ = ["DRAIN_TIMEOUT_S", "SERVERS", "Drain", "HttpServer"]

SERVERS = tuple(kind for kind in HTTP_SERVERS if kind != "auto")
"""The servers :class:`HttpServer` runs (``auto`` is resolved before it is made)."""

DRAIN_TIMEOUT_S = 15
"""Seconds requests in flight get to finish after the listener closes, unless told otherwise."""

IN_FLIGHT_PER_WORKER = 2048
"""granian's backpressure: requests one process runs at once; more wait, unread, in the Rust
layer (uvicorn sets no such bound)."""

MAX_HEAD = 64 * 1024
"""Bytes a request's line and headers may take (431 above; granian's default is 400 KiB, and
uvicorn has no bound of its own)."""

HEADER_TIMEOUT_MS = 10_000
"""Milliseconds a connection may take to send a request's headers before it is closed."""

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True, slots=True)
class Drain:
    """How a server stops on SIGTERM or SIGINT."""

    delay_s: float
    """Seconds between the first signal and the listener closing (load balancers stop sending)."""
    timeout_s: float
    """Seconds requests in flight get to finish once the listener has closed."""
    on_start: Callable[[], None]
    """Called at the first signal, from its handler in the main thread: readiness starts failing
    (set a flag; keep it short)."""


class HttpServer:
    """One ASGI ``app`` on the listening ``sock`` with the server ``kind`` (one of
    :data:`SERVERS`); :meth:`serve` runs it on the running event loop until a signal or
    :meth:`stop` ends it."""

    def __init__(self, app: Any, sock: socket.socket, *, kind: str, drain: Drain) -> None:
        if kind not in SERVERS:
            raise ValueError(f"unknown HTTP server {kind!r}; expected one of {', '.join(SERVERS)}")
        self.app = app
        self.sock = sock
        self.kind = kind
        self.drain = drain
        self.started = asyncio.Event()
        """Set once the server accepts connections."""
        self._stop: Callable[[], None] | None = None

    async def serve(self) -> None:
        """Serve until stopped; answers once the server has let go of its connections."""
        if self.kind == "granian":
            await self._serve_granian()
        else:
            await self._serve_uvicorn()

    def stop(self) -> None:
        """Close the listener and let the requests in flight finish (no readiness delay)."""
        if self._stop is not None:
            self._stop()

    async def _serve_granian(self) -> None:
        # granian's type stubs lag its extension's signatures, so its worker API is used untyped.
        rust: Any = importlib.import_module("granian._granian")
        futures: Any = importlib.import_module("granian._futures")
        asgi: Any = importlib.import_module("granian.asgi")
        http: Any = importlib.import_module("granian.http")
        loop = asyncio.get_running_loop()
        released = loop.create_future()  # granian has closed its listener and connections
        worker_stop = rust.WorkerSignal()
        worker_stop.add_cb(lambda: loop.call_soon_threadsafe(_resolve, released))
        stopping = threading.Event()

        def close_listener() -> None:
            if not stopping.is_set():
                stopping.set()
                worker_stop.set()  # granian closes its descriptor: it accepts no more
                self.sock.close()  # and with this one the port refuses connections

        self._stop = close_listener
        # granian closes the descriptor it is given when it stops accepting.
        holder = rust.SocketHolder(os.dup(self.sock.fileno()), False, BACKLOG)
        worker = rust.ASGIWorker(
            1,  # worker id
            (None, holder),
            None,  # no IPC with a granian supervisor
            1,  # tokio threads: the sockets of one process need no more
            512,  # tokio's blocking threads (granian's default)
            1,  # Python threads: ASGI calls run on this event loop
            30,  # idle seconds before an unused thread ends
            IN_FLIGHT_PER_WORKER,
            "auto",  # HTTP/1.1, and HTTP/2 with prior knowledge
            http.HTTP1Settings(header_read_timeout=HEADER_TIMEOUT_MS, max_buffer_size=MAX_HEAD),
            http.HTTP2Settings(max_headers_size=MAX_HEAD),
            False,  # websockets: Quarry serves none
            None,  # static files: none
            *(False, None, None, None, "tls1.3", None, [], False),  # no TLS (a proxy ends it)
            (None, None),  # no metrics exporter
        )
        call = futures._future_watcher_wrapper(
            asgi._callback_wrapper(self.app, {"url_path_prefix": None}, {}, None)
        )
        logging.getLogger("_granian").setLevel(logging.WARNING)  # "worker-1" is not Quarry's
        signals = _Signals(loop, self.drain.on_start)
        try:
            worker.serve_async(
                futures._new_cbscheduler(loop, call, impl_asyncio=True), loop, worker_stop
            )
            self.started.set()
            await signals.first_or(released)
            if not released.done() and signals.count:
                await signals.second_within(self.drain.delay_s, released)
            close_listener()
            if signals.count < 2:
                await signals.second_within(self.drain.timeout_s, released)
        finally:
            signals.restore()
            close_listener()

    async def _serve_uvicorn(self) -> None:
        import uvicorn

        drain = self.drain
        draining = threading.Event()
        started = self.started

        class DrainingServer(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if self.started:
                    started.set()

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if not draining.is_set():
                    draining.set()
                    drain.on_start()
                    if drain.delay_s > 0:
                        timer = threading.Timer(drain.delay_s, super().handle_exit, (sig, frame))
                        timer.daemon = True
                        timer.start()
                        return
                super().handle_exit(sig, frame)  # after the delay, or a second signal: stop

        config = uvicorn.Config(
            self.app,
            http=_bounded_httptools(),
            log_config=None,
            access_log=False,
            # The caller starts the platform first (the lifespan's start then does nothing);
            # the lifespan stops it before uvicorn re-raises a signal it handled.
            lifespan="on",
            timeout_graceful_shutdown=int(drain.timeout_s),
        )
        server = DrainingServer(config)
        self._stop = lambda: setattr(server, "should_exit", True)
        await server.serve(sockets=[self.sock])
        if not server.started:
            raise RuntimeError("uvicorn stopped before it started serving")


def _bounded_httptools() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol bounded as granian is: :data:`MAX_HEAD` and
    :data:`HEADER_TIMEOUT_MS` (read now, so a test may lower them)."""
    from app.cli.uvicorn_protocol import BoundedHttpToolsProtocol

    bounds = {"max_head": MAX_HEAD, "header_timeout_s": HEADER_TIMEOUT_MS / 1000}
    return type("QuarryHttpToolsProtocol", (BoundedHttpToolsProtocol,), bounds)


class _Signals:
    """SIGTERM and SIGINT while a server runs. The handler runs in the main thread between two
    Python instructions, so ``on_first`` has run before the event loop reads any request that
    arrives after the signal (``loop.add_signal_handler`` would only queue it behind them)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_first: Callable[[], None]) -> None:
        self.loop = loop
        self.on_first = on_first
        self.count = 0
        self._first: asyncio.Future[None] = loop.create_future()
        self._second: asyncio.Future[None] = loop.create_future()
        self._previous = {number: signal.signal(number, self._received) for number in _SIGNALS}

    def _received(self, _number: int, _frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            self.on_first()
        self.loop.call_soon_threadsafe(_resolve, self._first if self.count == 1 else self._second)

    async def first_or(self, other: asyncio.Future[None]) -> None:
        await asyncio.wait((self._first, other), return_when=asyncio.FIRST_COMPLETED)

    async def second_within(self, seconds: float, other: asyncio.Future[None]) -> None:
        if seconds > 0:
            await asyncio.wait(
                (self._second, other), timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )

    def restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
