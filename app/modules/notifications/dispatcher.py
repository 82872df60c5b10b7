"""The delivery loop: takes due deliveries from the table and sends them, many at a time.

Every process hosting the module runs one. A pass leases as many due deliveries as it has free
slots (``concurrency``) and starts one task per delivery; a task makes one attempt and records it:
delivered, pending again after a backoff (:meth:`app.kernel.backoff.Backoff.delay`: doubling from
``retry_base_s``, capped at ``retry_cap_s``), or failed once ``max_attempts`` attempts of the round
failed. A slow or dead receiver holds one slot for at most ``timeout_s`` and delays nothing else.
The loop sleeps until the next delivery is due (at most :data:`POLL_S`), or until new work or a
freed slot wakes it. Replicas sharing the database split the work through the leases, so no
singleton lease is needed; a process that dies mid-attempt loses its leases when they lapse and
the delivery is tried again (receivers deduplicate by the ``Quarry-Event-Id`` header).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING

from app.kernel import metrics
from app.kernel.backoff import Backoff
from app.modules.notifications import store
from app.modules.notifications.sender import Sender

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.modules.notifications.settings import NotificationsSettings

__all__ = ["POLL_S", "Dispatcher"]

POLL_S = 5.0
"""The longest the loop sleeps: work queued by another process is found within this."""
PRUNE_EVERY_S = 3600.0
_LEASE_MARGIN_S = 30.0


class Dispatcher:
    """Sends the deliveries of one database; :meth:`start` and :meth:`stop` run its loop."""

    def __init__(
        self, db: Database, sender: Sender, config: NotificationsSettings, logger: logging.Logger
    ) -> None:
        self._db = db
        self._sender = sender
        self._config = config
        self._log = logger
        self._token = uuid.uuid4().hex
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._retries = Backoff(
            "webhook delivery", logger, base_s=config.retry_base_s, cap_s=config.retry_cap_s
        )
        self._attempts = metrics.shared(
            metrics.Counter,
            "quarry.notifications.attempts",
            description="Webhook delivery attempts, by outcome (delivered, retry, failed).",
        )

    def wake(self) -> None:
        """Look for due deliveries now (call on the event loop)."""
        self._wake.set()

    async def start(self) -> None:
        """Start the loop on the running event loop."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="notifications-deliveries")

    async def stop(self) -> None:
        """Stop the loop and the attempts in flight; give their leases back."""
        tasks = [t for t in (self._loop_task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        with contextlib.suppress(Exception):
            await self._db.write(lambda conn: store.release(conn, self._token))
        await self._sender.aclose()

    async def _run(self) -> None:
        outage = Backoff("the webhook delivery loop", self._log, cap_s=30.0, module="notifications")
        next_prune = time.monotonic()
        while True:
            self._wake.clear()
            try:
                if time.monotonic() >= next_prune:
                    await self._prune()
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                await self._pass()
                # with every slot busy, the next finished attempt wakes the loop
                full = len(self._inflight) >= self._config.concurrency
                due = None if full else await self._db.read(store.next_due)
            except Exception as exc:
                await asyncio.sleep(outage.failed(exc))
                continue
            outage.succeeded()
            wait = POLL_S if due is None else min(POLL_S, max(0.0, due - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _prune(self) -> None:
        cutoff = time.time() - self._config.retention_s
        await self._db.write(lambda conn: store.prune(conn, cutoff))

    async def _pass(self) -> None:
        """Start attempts for as many due deliveries as there are free slots."""
        free = self._config.concurrency - len(self._inflight)
        if free <= 0:
            return
        lease_s = self._config.timeout_s + _LEASE_MARGIN_S
        claimed = await self._db.write(
            lambda conn: store.claim(
                conn, token=self._token, now=time.time(), lease_s=lease_s, limit=free
            )
        )
        for delivery in claimed:
            task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
            self._inflight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _deliver(self, delivery: store.Claimed) -> None:
        attempt = await self._sender.attempt(delivery)
        retry_at = None
        if attempt.error is not None and delivery.round_attempts + 1 < self._config.max_attempts:
            retry_at = time.time() + self._retries.delay(delivery.round_attempts + 1)
        outcome = "delivered" if attempt.error is None else "retry" if retry_at else "failed"
        self._attempts.add(1, {"outcome": outcome})
        if outcome == "failed":
            self._log.warning(
                "webhook delivery failed after %d attempts: %s",
                delivery.round_attempts + 1,
                attempt.error,
                extra={"webhook": delivery.webhook, "delivery": delivery.id},
            )
        try:
            await self._db.write(
                lambda conn: store.record(
                    conn, delivery, attempt, token=self._token, retry_at=retry_at
                )
            )
        except Exception:  # the lease lapses and the delivery is tried again
            self._log.warning(
                "cannot record a webhook attempt", exc_info=True, extra={"delivery": delivery.id}
            )
