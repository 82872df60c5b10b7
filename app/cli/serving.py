"""The long-running commands: ``quarry serve``, ``quarry quickstart`` and ``quarry worker``.

``serve`` and ``quickstart`` bind their port first and start the platform before the HTTP server
(:mod:`app.cli.http_server`), so a busy port or a failing start is one line from
:func:`app.cli.commands.main`, never a server's logged traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from app.bootstrap import Platform, create_app
from app.cli import heap
from app.cli.http_server import Drain, HttpServer
from app.cli.listen import listen
from app.kernel.settings import ConfigError, Settings, http_server_for, parse_workers

__all__ = ["quickstart", "run", "serve", "serve_on", "worker"]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh event loop (uvloop where it is installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(coro)
    return uvloop.run(coro)


def serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT: then readiness fails for ``--drain-delay`` seconds (load
    balancers stop sending), the listener closes, in-flight requests get ``--drain-timeout``
    seconds to finish, the modules stop (task workers finish their tasks) and the process exits.

    With ``--workers N`` (``QUARRY_WORKERS``) above 1, N server processes serve the port
    (:mod:`app.cli.workers`)."""
    if args.workers is not None:
        try:
            settings = settings.replace(workers=parse_workers(args.workers))
        except ValueError as exc:
            raise ConfigError(f"--workers={args.workers!r} is not valid: {exc}") from None
    choice = args.http_server if args.http_server is not None else settings.http_server
    settings = settings.replace(http_server=http_server_for(choice, settings.workers))
    if settings.workers > 1:
        from app.cli.workers import supervise

        return supervise(settings, lambda sock: serve_on(sock, settings, args, worker=True))
    sock = listen(settings.host, settings.port)  # a busy port fails here, before any work
    try:
        return serve_on(sock, settings, args)
    finally:
        sock.close()


def serve_on(
    sock: socket.socket, settings: Settings, args: argparse.Namespace, *, worker: bool = False
) -> int:
    """Serve the platform on the listening ``sock`` until stopped (the whole server, or one
    ``worker`` of several sharing ``sock``)."""
    platform = Platform(settings)

    def draining() -> None:
        platform.draining = True
        if not worker:
            print(f"quarry draining for {args.drain_delay} s", file=sys.stderr)

    async def serve_until_stopped() -> None:
        app = create_app(platform, host=settings.host)
        drain = Drain(delay_s=args.drain_delay, timeout_s=args.drain_timeout, on_start=draining)
        server = HttpServer(app, sock, kind=settings.http_server, drain=drain)
        # Started before the server, so a failure reaches `main` as itself rather than as the
        # server's logged traceback.
        await platform.start()
        heap.settle()
        if not worker:
            serving = f"quarry serving on http://{settings.host}:{settings.port}"
            if platform.gateway:  # say what it serves: a gateway hosts nothing of its own
                serving += f" (a gateway to {', '.join(s.name for s in platform.reachable)})"
            print(serving, file=sys.stderr)
        try:
            await server.serve()
        finally:
            if platform.started:  # the server ended before a lifespan could stop it
                await platform.stop()

    run(serve_until_stopped())
    return 0


def quickstart(settings: Settings, args: argparse.Namespace) -> int:
    """Every stage of the loop in a fresh data directory, then serve (unless ``--no-serve``)."""
    import time

    from app.cli import quickstart as stages

    fresh = settings.data_dir / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    return run(stages.run(settings.replace(data_dir=fresh), serve=not args.no_serve))


def worker(settings: Settings, args: argparse.Namespace) -> int:
    """Run task workers on the Redis broker until stopped."""
    from app.kernel.tasks import run_worker

    if settings.broker_url.startswith("memory://"):
        raise ConfigError(
            "QUARRY_BROKER_URL is memory://, so tasks run inside `quarry serve`;"
            " set it to redis://... to run separate workers"
        )
    platform = Platform(settings)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="quarry-loop", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(platform.start(), loop).result()
        heap.settle()
        queues = {q.strip() for q in args.queues.split(",")} if args.queues else None
        print(f"quarry worker: {', '.join(platform.built) or 'no modules'}", file=sys.stderr)
        run_worker(platform.tasks, queues=queues, threads=args.threads)
    finally:
        if platform.started:
            asyncio.run_coroutine_threadsafe(platform.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
    return 0
