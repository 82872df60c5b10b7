"""One publisher's outbox relayed to its Redis stream, ``{prefix}events:{module}``.

A pass takes a batch of undispatched outbox rows in ``seq`` order, ``XADD``\\s them and marks them
dispatched, all inside one database transaction: the rows stay locked (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, the write lock on SQLite) while they are added, so replicas sharing the
database never publish the same row twice at once. The ``XADD`` happens before the rows are
marked, so a crash in between publishes them again; consumers deduplicate by event id. That
transaction runs on a worker thread (``Database.write``), which is why this side uses redis-py's
synchronous client.

The stream is capped at about ``maxlen`` entries (``XADD MAXLEN ~``) and, at each prune, loses
the entries older than the retention (``XTRIM MINID ~``); dispatched outbox rows are pruned
after the retention too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import redis
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.kernel.events import _sql
from app.kernel.events._inbox import Envelope
from app.kernel.events._looping import Loop

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events.outbox import Outbox

__all__ = ["StreamPublisher"]

_BATCH = 100
_MAX_PRUNE_INTERVAL_S = 3600.0
_SOCKET_TIMEOUT_S = 10.0


class StreamPublisher(Loop):
    """Relays one module's outbox to its stream."""

    def __init__(
        self,
        *,
        module: str,
        db: Database,
        outbox: Outbox,
        url: str,
        stream: str,
        maxlen: int,
        poll_s: float,
        retention_s: float,
        logger: logging.Logger,
    ) -> None:
        super().__init__(
            name=f"quarry-events-publish-{module}",
            poll_s=poll_s,
            logger=logger,
            extra={"publisher": module, "stream": stream},
            label=f"event publisher of {module}",
            module=module,
        )
        self.module = module
        self.db = db
        self.stream = stream
        self._url = url
        self._tables = _sql.Tables(outbox.table, outbox.deliveries)
        self._maxlen = maxlen
        self._retention_s = retention_s
        self._next_prune = 0.0
        self._redis: redis.Redis | None = None

    def start(self) -> None:
        """Connect and start relaying on the running loop."""
        self._redis = redis.Redis.from_url(
            self._url, socket_timeout=_SOCKET_TIMEOUT_S, socket_connect_timeout=_SOCKET_TIMEOUT_S
        )
        super().start()

    def close(self) -> None:
        """Close the Redis connections (after the task ended)."""
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    async def run_pass(self, generation: int) -> float:
        """Prune when due, then publish a batch; answer 0 while there is more."""
        if time.monotonic() >= self._next_prune:
            await self._prune()
        o = self._tables.outbox
        undispatched = await self.db.read(
            lambda c: c.execute(
                sa.select(sa.exists().where(o.c.dispatched == sa.false()))
            ).scalar_one()
        )
        if undispatched:
            await self.db.write(self._publish_batch)
            return 0.0
        self.answer(generation)
        return self.poll_s

    def _publish_batch(self, conn: Connection) -> int:
        """Add a batch of undispatched events to the stream, then mark them (worker thread)."""
        client = self._redis
        if client is None:
            raise RuntimeError("the stream publisher is not started")
        o = self._tables.outbox
        rows = conn.execute(
            sa.select(o.c.seq, o.c.id, o.c.type, o.c.payload, o.c.traceparent, o.c.created_at)
            .where(o.c.dispatched == sa.false())
            .order_by(o.c.seq)
            .limit(_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        pipe = client.pipeline(transaction=False)
        for r in rows:
            entry = Envelope(
                event_id=r.id,
                publisher=self.module,
                type=r.type,
                payload=bytes(r.payload),
                traceparent=r.traceparent,
                created_at=r.created_at,
            )
            pipe.xadd(self.stream, entry.to_fields(), maxlen=self._maxlen, approximate=True)
        pipe.execute()
        conn.execute(o.update().where(o.c.seq.in_([r.seq for r in rows])).values(dispatched=True))
        return len(rows)

    async def _prune(self) -> None:
        cutoff = time.time() - self._retention_s
        await self.db.write(lambda c: _sql.prune(c, self._tables, cutoff))
        client = self._redis
        if client is not None:
            min_id = f"{int(cutoff * 1000)}-0"
            await asyncio.to_thread(client.xtrim, self.stream, minid=min_id, approximate=True)
        self._next_prune = time.monotonic() + min(self._retention_s, _MAX_PRUNE_INTERVAL_S)
