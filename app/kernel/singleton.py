"""Singleton background loops: with several replicas, one runs a loop's rounds, the others wait.

A loop that must not run twice at once (the drift schedule, monitoring's retention, the training
watchdog) asks :func:`lease` for a :class:`Lease` named after it and hands both to
:func:`run_as_singleton`. Every ``check_s`` seconds each replica tries to take (or keep) the
lease; the one holding it runs a round every ``interval_s``. When the holder stops or dies the
lease frees and another replica takes over at its next try.

Where the lock lives follows the data the loop works on, so that exactly the replicas sharing
that data compete for it:

- **PostgreSQL** module database: a session-level advisory lock
  (``pg_try_advisory_lock(hashtext(current_schema()), hashtext(name))``) held on a dedicated
  connection while leading. PostgreSQL frees it when that connection closes or is lost, so a
  killed holder releases it at once. The schema is part of the key: replicas on different
  schemas of one database do not compete.
- **Redis**, when ``QUARRY_LOCKS_URL=redis://...`` is set (for instance when PostgreSQL sits behind
  a transaction-mode pooler, where session advisory locks do not work): ``SET key token NX PX
  ttl`` under ``QUARRY_REDIS_PREFIX``, renewed by the holder every third of ``ttl`` with a
  compare-and-renew script. A holder that dies is replaced once its lease expires.
- **SQLite** (one host): an exclusive ``flock`` on a file beside the database, so that processes
  sharing a data directory (``quarry serve`` and ``quarry worker``) still run a loop once. The
  operating system frees it when the process exits. An in-memory database is always led.

Which loops this process leads is the gauge ``quarry_singleton_leader{loop="..."}`` (1 or 0)
on ``/metrics``, and a ``leading <loop>`` log line whenever that changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from app.kernel import metrics
from app.kernel.backoff import Backoff

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from app.kernel.db import Database
    from app.kernel.settings import Settings

__all__ = [
    "FileLease",
    "Lease",
    "LocalLease",
    "PostgresLease",
    "RedisLease",
    "lease",
    "run_as_singleton",
]

_log = logging.getLogger("quarry.singleton")

BACKOFF_CAP_S = 30.0
"""The longest wait between attempts while a singleton loop's lease or rounds keep failing."""


class Lease:
    """The right to run loop ``name``'s rounds. ``held`` says whether this process has it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.held = False

    async def hold(self) -> bool:
        """Take the lease, or check it is still ours; answer whether it is held."""
        raise NotImplementedError

    async def release(self) -> None:
        """Give the lease up (another process may take it at once)."""
        raise NotImplementedError


class LocalLease(Lease):
    """Always held: the data lives in this process only."""

    async def hold(self) -> bool:
        self.held = True
        return True

    async def release(self) -> None:
        self.held = False


class FileLease(Lease):
    """An exclusive, non-blocking ``flock`` on ``path``; the OS frees it when the process ends."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self._fd: int | None = None

    async def hold(self) -> bool:
        if self._fd is None:
            self._fd = _try_flock(self.path)
        self.held = self._fd is not None
        return self.held

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
        self.held = False


def _try_flock(path: Path) -> int | None:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class PostgresLease(Lease):
    """A session-level advisory lock held on a connection of its own while leading."""

    def __init__(self, name: str, engine: Engine) -> None:
        super().__init__(name)
        self._engine = engine
        self._conn: Connection | None = None

    async def hold(self) -> bool:
        self.held = await asyncio.to_thread(self._hold)
        return self.held

    def _hold(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.exec_driver_sql("SELECT 1")  # the lock lives as long as this does
                return True
            except sa.exc.SQLAlchemyError:
                self._drop()
                return False
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            taken = conn.execute(
                sa.text("SELECT pg_try_advisory_lock(hashtext(current_schema()), hashtext(:n))"),
                {"n": self.name},
            ).scalar_one()
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        return True

    async def release(self) -> None:
        if self._conn is not None:
            await asyncio.to_thread(self._drop)
        self.held = False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Unlock explicitly first: the server frees a closed session's locks only once its
        # backend has noticed the hang-up, so a replica asking right after would still be
        # refused. Then close the physical connection, which frees every lock it might hold; a
        # pooled connection handed back with the lock still taken would lend it to whoever
        # checks it out next.
        with contextlib.suppress(Exception):
            conn.execute(
                sa.text("SELECT pg_advisory_unlock(hashtext(current_schema()), hashtext(:n))"),
                {"n": self.name},
            )
        with contextlib.suppress(Exception):
            conn.invalidate()
        with contextlib.suppress(Exception):
            conn.close()


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease(Lease):
    """``SET key token NX PX ttl``, renewed every ``ttl_s / 3`` while held (compare-and-renew)."""

    def __init__(self, name: str, *, url: str, key: str, ttl_s: float = 15.0) -> None:
        super().__init__(name)
        self.key = key
        self.ttl_s = ttl_s
        self._url = url
        self._token = uuid.uuid4().hex
        self._client: Any = None
        self._keeper: asyncio.Task[None] | None = None

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio  # lazily: only processes configured for Redis locks need it

            timeout = max(0.5, self.ttl_s / 3)
            self._client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        return self._client

    async def hold(self) -> bool:
        if self.held:
            return True  # the keeper renews it, and clears ``held`` when it is lost
        ttl_ms = int(self.ttl_s * 1000)
        if await self._redis().set(self.key, self._token, nx=True, px=ttl_ms):
            self.held = True
            self._keeper = asyncio.create_task(self._keep(), name=f"lease-{self.name}")
        return self.held

    async def _keep(self) -> None:
        ttl_ms = int(self.ttl_s * 1000)
        renewed_at = time.monotonic()
        while self.held:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                renewed = await self._redis().eval(_RENEW, 1, self.key, self._token, ttl_ms)
            except Exception:
                # Unsure whether it still holds: stop leading before the lease can lapse.
                if time.monotonic() - renewed_at < self.ttl_s * 2 / 3:
                    continue
                _log.warning("cannot renew the lease of %s", self.name, exc_info=True)
                renewed = 0
            if not renewed:
                self.held = False
                return
            renewed_at = time.monotonic()

    async def release(self) -> None:
        self.held = False
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.eval(_RELEASE, 1, self.key, self._token)
            await self._client.aclose()
            self._client = None


def lease(name: str, *, db: Database, settings: Settings) -> Lease:
    """The lease of loop ``name`` (``<module>.<loop>``) over the data in ``db``; see the module
    docstring for where it lives."""
    if settings.locks_url:
        key = f"{settings.redis_prefix}lock:{name}"
        return RedisLease(name, url=settings.locks_url, key=key)
    if db.dialect == "postgresql":
        return PostgresLease(name, db.engine)
    path = db.engine.url.database
    if path and path != ":memory:":
        with contextlib.suppress(ImportError):
            import fcntl  # noqa: F401 - POSIX only; elsewhere the process always leads

            return FileLease(name, Path(f"{path}.{name}.lock"))
    return LocalLease(name)


async def run_as_singleton(
    lease: Lease,
    body: Callable[[], Awaitable[None]],
    *,
    interval_s: float,
    check_s: float = 5.0,
    logger: logging.Logger | None = None,
) -> None:
    """Run ``body`` (one round) every ``interval_s`` seconds while this process holds
    ``lease``, until cancelled.

    Between rounds the lease is tried (or kept) every ``check_s``, so a standby takes over
    within about ``check_s`` of the leader letting go. A replica that becomes the leader waits a
    full interval before its first round, as the old one may just have run one. A failing round
    or lease is retried with capped exponential backoff, logged once when the failures start
    and once when they end, and the loop goes on. The lease is released on the way out.
    """
    log = logger or _log
    # A lease or a round failing through an outage is logged once when it starts and once when
    # it ends; the waits between attempts grow from check_s up to BACKOFF_CAP_S.
    taking = Backoff(f"taking the lease of {lease.name}", log, base_s=check_s, cap_s=BACKOFF_CAP_S)
    rounds = Backoff(f"a round of {lease.name}", log, base_s=check_s, cap_s=BACKOFF_CAP_S)
    gauge = metrics.shared(
        metrics.UpDownCounter,
        "quarry.singleton.leader",
        description="1 while this process leads the singleton loop, else 0",
    )
    labels = {"loop": lease.name}
    gauge.add(0, labels)  # the series exists (0) before this process leads
    check_s = min(check_s, interval_s)
    leading, next_round = False, time.monotonic() + interval_s
    try:
        while True:
            pause = 0.0
            try:
                held = await lease.hold()
            except Exception as exc:
                held, pause = False, taking.failed(exc)
            else:
                taking.succeeded()
            if held != leading:
                leading = held
                gauge.add(1 if held else -1, labels)
                log.info("%s %s", "leading" if held else "no longer leading", lease.name)
            now = time.monotonic()
            if not held:
                next_round = now + interval_s
            elif now >= next_round:
                try:
                    await body()
                except Exception as exc:
                    pause = rounds.failed(exc)
                else:
                    rounds.succeeded()
                next_round = time.monotonic() + max(interval_s, pause)
            wait = min(check_s, next_round - time.monotonic())
            await asyncio.sleep(max(0.0, wait, pause))
    finally:
        if leading:
            gauge.add(-1, labels)
        await asyncio.shield(lease.release())
