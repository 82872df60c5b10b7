"""Quarry in Python: ``async with app.connect() as q`` and ``with app.connect_sync() as q``.

``q.registry`` (and every other hosted module's attribute) exposes that module's contract.
The composition root is imported lazily, so ``import app`` does no I/O and loads no module.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

__all__ = ["Quarry", "SyncQuarry", "connect", "connect_sync"]


class Quarry:
    """Typed access to each module's contract (``q.registry``, ``q.inference`` ...)."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self._clients = clients
        for name, client in clients.items():
            setattr(self, name, client)

    @property
    def modules(self) -> list[str]:
        """The modules this connection reaches."""
        return list(self._clients)


@asynccontextmanager
async def connect(
    url: str | None = None, *, api_key: str | None = None, **settings: Any
) -> AsyncIterator[Quarry]:
    """Run the platform in this process, or with ``url`` reach a running server over RPC.

    In-process, keyword arguments override settings, e.g. ``connect(data_dir="/tmp/q")``, and a
    mapping named after a module overrides that module's own, e.g.
    ``connect(inference={"max_batch_size": 1})``; the rest comes from the environment and
    ``quarry.toml`` as for ``quarry serve``. Remotely, ``api_key``
    is an API key (its scopes limit what may be called) or the service token.

    In-process, only warnings and errors are logged unless a level is asked for
    (``connect(log_level="INFO")``, ``QUARRY_LOG_LEVEL`` or ``log_level`` in ``quarry.toml``).
    ``q.inference.predict`` also takes numpy arrays, lists and DataFrames as inputs
    (:mod:`app.client`).
    """
    from app.client import with_conveniences

    if url is not None:
        from app.bootstrap import remote_clients

        async with remote_clients(url, api_key) as clients:
            yield Quarry(with_conveniences(clients))
        return
    import dataclasses

    from app.bootstrap import Platform, configure
    from app.kernel.settings import Settings, load_settings

    names = {f.name for f in dataclasses.fields(Settings)}
    by_module = {k: v for k, v in settings.items() if isinstance(v, dict) and k not in names}
    kernel = {k: v for k, v in settings.items() if k not in by_module}
    loaded = configure(load_settings(**kernel), overrides=by_module)
    asked = "log_level" in kernel or "QUARRY_LOG_LEVEL" in os.environ
    if not asked and loaded.log_level == Settings.log_level:  # nobody asked: stay quiet
        loaded = loaded.replace(log_level="WARNING")
    async with Platform(loaded) as platform:
        clients = {spec.name: platform.client(spec.name) for spec in platform.reachable}
        yield Quarry(with_conveniences(clients))


class SyncQuarry:
    """The blocking face of :class:`Quarry`: the same methods, run on a private event loop."""

    def __init__(self, quarry: Quarry, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for name in quarry.modules:
            setattr(self, name, _SyncClient(getattr(quarry, name), loop))

    @property
    def modules(self) -> list[str]:
        """The modules this connection reaches."""
        return [n for n, v in vars(self).items() if isinstance(v, _SyncClient)]


class _SyncClient:
    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop) -> None:
        from app.kernel.protocols import describe

        self._repr = repr(client)
        for method in describe(client.protocol):
            target = getattr(client, method.name)
            wrap = _blocking_stream if method.info.streaming else _blocking_call
            setattr(self, method.name, wrap(target, loop))
        for name in getattr(client, "conveniences", ()):  # helpers beyond the contract
            setattr(self, name, _blocking_call(getattr(client, name), loop))

    def __repr__(self) -> str:
        return self._repr.replace("<", "<sync ", 1)


def _blocking_call(
    target: Callable[..., Any], loop: asyncio.AbstractEventLoop
) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(target(*args), loop).result()

    call.__doc__ = target.__doc__
    return call


def _blocking_stream(
    target: Callable[..., Any], loop: asyncio.AbstractEventLoop
) -> Callable[..., Iterator[Any]]:
    def stream(*args: Any) -> Iterator[Any]:
        iterator = target(*args).__aiter__()
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(iterator.__anext__(), loop).result()
            except StopAsyncIteration:
                return

    stream.__doc__ = target.__doc__
    return stream


@contextmanager
def connect_sync(
    url: str | None = None, *, api_key: str | None = None, **settings: Any
) -> Iterator[SyncQuarry]:
    """Blocking :func:`connect` for scripts and notebooks.

    The platform runs on an event loop in a thread of its own, so this works inside Jupyter (whose
    own loop is already running) as well as in plain scripts.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="quarry-loop", daemon=True)
    thread.start()
    manager = connect(url, api_key=api_key, **settings)
    try:
        quarry = asyncio.run_coroutine_threadsafe(manager.__aenter__(), loop).result()
        try:
            yield SyncQuarry(quarry, loop)
        finally:
            asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
