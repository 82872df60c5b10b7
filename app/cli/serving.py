"""The long-running commands: ``quarry serve``, ``quarry quickstart`` and ``quarry worker``.

``serve`` and ``quickstart`` bind their port first and start the platform before uvicorn, so a
busy port or a failing start is one line from :func:`app.cli.commands.main`, never uvicorn's
logged traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

from app.bootstrap import Platform, create_app
from app.cli import heap
from app.cli.listen import listen
from app.kernel.settings import ConfigError, Settings, parse_workers

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
    import uvicorn

    platform = Platform(settings)

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if platform.draining or args.drain_delay <= 0:
                super().handle_exit(sig, frame)  # a second signal stops at once
                return
            platform.draining = True
            if not worker:
                print(f"quarry draining for {args.drain_delay} s", file=sys.stderr)
            timer = threading.Timer(args.drain_delay, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()

    async def serve_until_stopped() -> None:
        app = create_app(platform, host=settings.host)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=args.drain_timeout,
        )
        server = DrainingServer(config)
        # Started here rather than in uvicorn's lifespan (where starting again does nothing), so
        # a failure reaches `main` as itself instead of as uvicorn's logged traceback. The
        # lifespan still stops the platform, before uvicorn re-raises a signal it handled.
        await platform.start()
        heap.settle()
        if not worker:
            serving = f"quarry serving on http://{settings.host}:{settings.port}"
            if platform.gateway:  # say what it serves: a gateway hosts nothing of its own
                serving += f" (a gateway to {', '.join(s.name for s in platform.reachable)})"
            print(serving, file=sys.stderr)
        try:
            await server.serve(sockets=[sock])
        finally:
            if platform.started:  # uvicorn ended before its lifespan could stop it
                await platform.stop()
        if not server.started:
            raise SystemExit(1)

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
