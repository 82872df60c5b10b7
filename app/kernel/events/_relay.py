"""One publisher's relay: fans its outbox out into deliveries and delivers them, in order.

A pass (1) prunes when it is time, (2) dispatches undispatched events, (3) leases due deliveries
and calls their handlers one after the other. A pass that found work is followed by another at
once; otherwise the relay sleeps until the next retry is due, at most ``poll_s``, or until a
commit in the publisher's outbox wakes it.

Every replica runs its own relay and needs no singleton lease (:mod:`app.kernel.singleton`):
on PostgreSQL the rows a pass takes are locked ``FOR UPDATE SKIP LOCKED`` and deliveries are
leased, so relays sharing a database split the work and deliver each event once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import TYPE_CHECKING

from app.kernel.events import _sql
from app.kernel.events._handling import handle
from app.kernel.events._looping import Loop
from app.kernel.events._subscriptions import Subscriptions

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events.outbox import Outbox

__all__ = ["Relay", "RetryPolicy"]

_DISPATCH_BATCH = 100
_CLAIM_BATCH = 20
_LEASE_S = 60.0
"""How long a relay holds the deliveries it leased; it stops using a batch after half of it."""
_MAX_PRUNE_INTERVAL_S = 3600.0


class RetryPolicy:
    """Exponential backoff: ``base_s`` doubled per failed attempt, plus up to 25% jitter."""

    max_delay_s = 3600.0

    def __init__(self, *, max_attempts: int, base_s: float) -> None:
        self.max_attempts = max_attempts
        self.base_s = base_s

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        nominal = min(self.base_s * 2.0 ** (attempt - 1), self.max_delay_s)
        return nominal * (1.0 + 0.25 * random.random())

    def retry_at(self, attempt: int, error: str | None) -> float | None:
        """When to try again after attempt number ``attempt`` ended with ``error``; ``None``
        when it succeeded or was the last one."""
        if error is None or attempt >= self.max_attempts:
            return None
        return time.time() + self.delay(attempt)


class Relay(Loop):
    """Delivers one publisher's events to the subscribers registered in this process."""

    def __init__(
        self,
        *,
        module: str,
        db: Database,
        outbox: Outbox,
        subscriptions: Subscriptions,
        retry: RetryPolicy,
        poll_s: float,
        retention_s: float,
        logger: logging.Logger,
    ) -> None:
        super().__init__(
            name=f"quarry-events-{module}",
            poll_s=poll_s,
            logger=logger,
            extra={"publisher": module},
            label="event relay",
            module=module,
        )
        self.module = module
        self.db = db
        self._tables = _sql.Tables(outbox.table, outbox.deliveries)
        self._subs = subscriptions
        self._retry = retry
        self._retention_s = retention_s
        self._next_prune = 0.0

    async def run_pass(self, generation: int) -> float:
        """One round of work; answers how long to sleep (0 when there may be more to do).

        An idle pass costs one read: the write transactions only run when there is work.
        """
        if time.monotonic() >= self._next_prune:
            cutoff = time.time() - self._retention_s
            await self.db.write(lambda c: _sql.prune(c, self._tables, cutoff))
            self._next_prune = time.monotonic() + min(self._retention_s, _MAX_PRUNE_INTERVAL_S)
        pairs = self._subs.pairs()
        work = await self.db.read(lambda c: _sql.survey(c, self._tables, pairs))
        if work.undispatched:
            await self.db.write(
                lambda c: _sql.dispatch(
                    c, self._tables, self._subs.subscribers_of, time.time(), _DISPATCH_BATCH
                )
            )
            return 0.0
        now = time.time()
        if work.next_due is not None and work.next_due <= now:
            token = str(uuid.uuid4())
            claimed = await self.db.write(
                lambda c: _sql.claim(
                    c,
                    self._tables,
                    pairs,
                    token=token,
                    now=now,
                    lease_s=_LEASE_S,
                    limit=_CLAIM_BATCH,
                )
            )
            await self._deliver_batch(claimed, token)
            return 0.0
        if work.pending == 0:
            self.answer(generation)
        if work.next_due is None:
            return self.poll_s
        return min(work.next_due - now, self.poll_s)

    async def _deliver_batch(self, claimed: list[_sql.Claimed], token: str) -> None:
        leased_at, done = time.monotonic(), 0
        try:
            for delivery in claimed:
                if self.stopping.is_set() or time.monotonic() - leased_at > _LEASE_S / 2:
                    break
                await self._deliver(delivery, token)
                done += 1
        finally:
            if done < len(claimed):  # give back what was not attempted (stop, lease, error)
                await asyncio.shield(self.db.write(lambda c: _sql.release(c, self._tables, token)))

    async def _deliver(self, c: _sql.Claimed, token: str) -> None:
        error = await handle(
            self._subs,
            c,
            subscriber=c.subscriber,
            publisher=self.module,
            logger=self.log,
            max_attempts=self._retry.max_attempts,
        )
        retry_at = self._retry.retry_at(c.attempts + 1, error)
        await self.db.write(
            lambda conn: _sql.finish(
                conn, self._tables, c, token=token, now=time.time(), error=error, retry_at=retry_at
            )
        )
