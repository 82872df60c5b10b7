"""Dependency health: the servers this process needs, checked in the background and cached.

A :class:`DependencyMonitor` holds one probe per dependency: each module database
(``<module>.database``), and, when they are Redis, the task broker (``broker``), the event
streams (``events``), the online feature store (``online_store``) and the lease store
(``locks``). A background task checks every probe with a short timeout, every ``interval_s``
while all are up and every second while one is down, so ``/readyz`` reads a cached answer and
never waits on a server. A connection failure seen by the error mapping
(:func:`app.kernel.errors.unavailable_from`) marks the matching probes down at once and has them
checked again straight away.

A failed check (the server refused, the driver raised) marks its dependency down at once; a check
that only ran out of time does so when the check straight after it runs out of time too, so one
slow answer from a busy machine does not fail readiness. Database checks run on the monitor's own
threads, never queued behind the application's work in the event loop's default executor, and a
check still running when the next one starts is waited on, not started twice.

A dependency needed for serving (``serving=True``: the databases, the broker, the online store)
fails readiness while it is down; the others (event streams, leases: background work that catches
up by itself) are only reported. Every state is on ``/v1/modules`` and on ``/metrics`` as
``quarry_dependency_up{dependency="..."}`` (1 or 0); each change is one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from app.kernel import metrics

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.settings import Settings

__all__ = ["DependencyMonitor", "DependencyStatus", "report_failure"]

_log = logging.getLogger("quarry.dependencies")

DOWN_RECHECK_S = 1.0
"""How often a dependency that is down is checked again."""

TIMEOUTS_TO_DOWN = 2
"""Consecutive checks out of time that mark a dependency down (a failed check does at once)."""

Check = Callable[[], Awaitable[None]]
"""A probe: returns when the dependency answers, raises when it does not."""


class DependencyStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One dependency as ``/v1/modules`` shows it."""

    name: str
    kind: str
    """``postgresql``, ``sqlite`` or ``redis``."""
    up: bool | None
    """``None`` before the first check."""
    serving: bool
    """Whether readiness fails while it is down."""
    since: float | None = None
    """When it last changed state (seconds since the epoch)."""
    error: str | None = None
    """Why the last check failed (the exception's type only: no host or credentials)."""


@dataclass(eq=False)
class _Probe:
    name: str
    kind: str
    check: Check
    module: str | None
    serving: bool
    up: bool | None = None
    since: float | None = None
    error: str | None = None
    database: bool = field(default=False)
    timeouts: int = 0
    """Consecutive checks that ran out of time."""


_monitors: weakref.WeakSet[DependencyMonitor] = weakref.WeakSet()


def report_failure(kind: str, module: str | None = None) -> None:
    """A call of ``module`` lost its connection to a ``kind`` server: every running monitor
    marks the matching dependencies down and checks them again now. Safe from any thread."""
    for monitor in list(_monitors):
        monitor.suspect(kind, module)


class DependencyMonitor:
    """The probes of one process and their last answers."""

    def __init__(self, *, interval_s: float = 5.0, timeout_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._probes: dict[str, _Probe] = {}
        self._redis: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._wake = asyncio.Event()
        self._gauge = metrics.shared(
            metrics.UpDownCounter,
            "quarry.dependency.up",
            description="1 while the dependency answers its health check, else 0",
        )

    # --- registering ------------------------------------------------------------------------

    def add(
        self, name: str, kind: str, check: Check, *, module: str | None = None, serving: bool = True
    ) -> None:
        """Watch dependency ``name`` (a ``kind`` server) with ``check``; watching a name again
        (a restarted platform's new database) replaces its probe. Call before :meth:`start`."""
        self._probes[name] = _Probe(name, kind, check, module, serving)

    def add_database(self, module: str, db: Database) -> None:
        """Watch ``module``'s database as ``<module>.database`` (``SELECT 1`` on a pooled
        connection, on the monitor's own threads; a check still running is waited on by the
        next one rather than started again)."""
        running: asyncio.Future[None] | None = None

        def ping() -> None:
            with db.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")

        async def check() -> None:
            nonlocal running
            loop = asyncio.get_running_loop()
            if running is None or running.done() or running.get_loop() is not loop:
                running = loop.run_in_executor(self._threads, ping)
            await asyncio.shield(running)  # a timeout leaves it running for the next check

        self.add(f"{module}.database", db.dialect, check, module=module)
        self._probes[f"{module}.database"].database = True

    def add_redis(self, name: str, url: str, *, serving: bool) -> None:
        """Watch the Redis server at ``url`` as ``name`` (``PING``)."""

        async def check() -> None:
            await self._redis_client(url).ping()

        self.add(name, "redis", check, serving=serving)

    def add_settings(self, settings: Settings) -> None:
        """Watch the Redis servers ``settings`` name: broker, events, locks (a module's own, such
        as the features online store, are added by the composition root)."""
        for name, url, serving in (
            ("broker", settings.broker_url, True),
            ("events", settings.events_url, False),
            ("locks", settings.locks_url, False),
        ):
            if url and url.startswith("redis"):
                self.add_redis(name, url, serving=serving)

    def _redis_client(self, url: str) -> Any:
        client = self._redis.get(url)
        if client is None:
            import redis.asyncio  # lazily: only processes configured for Redis need it
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = self._redis[url] = redis.asyncio.Redis.from_url(
                url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        return client

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Check every dependency once, then keep checking in the background."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        databases = sum(p.database for p in self._probes.values())
        self._threads = ThreadPoolExecutor(
            max_workers=max(1, databases), thread_name_prefix="quarry-health"
        )
        for probe in self._probes.values():
            self._gauge.add(0, {"dependency": probe.name})  # the series exists before a check
        await self.check_now()
        _monitors.add(self)
        self._task = asyncio.create_task(self._run(), name="quarry-dependency-checks")

    async def stop(self) -> None:
        """Stop checking and close the probes' connections."""
        _monitors.discard(self)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for probe in self._probes.values():
            if probe.up:
                self._gauge.add(-1, {"dependency": probe.name})
            probe.up = None
        clients, self._redis = list(self._redis.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)  # a hung check is not waited for

    async def check_now(self) -> None:
        """Check every dependency now (each within ``timeout_s``)."""
        await asyncio.gather(*(self._check(p) for p in list(self._probes.values())))

    async def _run(self) -> None:
        while True:
            down = any(p.up is False for p in self._probes.values())
            wait = min(self.interval_s, DOWN_RECHECK_S) if down else self.interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            await self.check_now()

    async def _check(self, probe: _Probe) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await probe.check()
        except TimeoutError:
            self._timed_out(probe)
        except Exception as exc:  # whatever the driver raises, the answer is "down"
            probe.timeouts = 0
            self._set(probe, up=False, error=type(exc).__name__)
        else:
            probe.timeouts = 0
            self._set(probe, up=True, error=None)

    def _timed_out(self, probe: _Probe) -> None:
        probe.timeouts += 1
        if probe.up is False or probe.timeouts >= TIMEOUTS_TO_DOWN:
            self._set(probe, up=False, error="TimeoutError")
        else:
            self._wake.set()  # one more check straight away decides

    # --- state ------------------------------------------------------------------------------

    def suspect(self, kind: str, module: str | None) -> None:
        """Mark the dependencies a ``kind`` failure in ``module`` may concern down, and check
        them again now. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.suspect, kind, module)
            return
        for probe in self._probes.values():
            same_kind = probe.kind == kind or (kind == "database" and probe.database)
            same_place = module is None or probe.module in (None, module)
            if same_kind and same_place and probe.up is not False:
                self._set(probe, up=False, error=f"a call failed to reach {kind}")
        self._wake.set()

    def _set(self, probe: _Probe, *, up: bool, error: str | None) -> None:
        probe.error = error
        if probe.up is up:
            return
        was, probe.up, probe.since = probe.up, up, time.time()
        labels = {"dependency": probe.name}
        if up:
            self._gauge.add(1, labels)
            if was is False:
                _log.info("dependency %s is reachable again", probe.name, extra=_extra(probe))
        else:
            if was:
                self._gauge.add(-1, labels)
            _log.warning(
                "dependency %s (%s) is unreachable: %s",
                probe.name,
                probe.kind,
                error,
                extra=_extra(probe),
            )

    def statuses(self) -> list[DependencyStatus]:
        """Every dependency and its last known state, by name."""
        return [
            DependencyStatus(
                name=p.name,
                kind=p.kind,
                up=p.up,
                serving=p.serving,
                since=p.since,
                error=None if p.up else p.error,
            )
            for p in sorted(self._probes.values(), key=lambda p: p.name)
        ]

    def unavailable(self) -> list[str]:
        """The dependencies needed for serving that are down now, by name."""
        return sorted(p.name for p in self._probes.values() if p.serving and p.up is False)


def _extra(probe: _Probe) -> dict[str, Any]:
    return {"dependency": probe.name, "kind": probe.kind}
