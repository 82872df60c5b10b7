"""One publisher's relay: fans its outbox out into deliveries and delivers them, in order.

A pass (1) prunes when it is time, (2) dispatches undispatched events, (3) leases due deliveries
and calls their handlers one after the other. A pass that found work is followed by another at
once; otherwise the relay sleeps until the next retry is due, at most ``poll_s``, or until a
commit in the publisher's outbox wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from app.kernel.events import _sql
from app.kernel.events._subscriptions import EventMeta, Subscriptions

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events.outbox import Outbox

__all__ = ["Relay", "RetryPolicy"]

_DISPATCH_BATCH = 100
_CLAIM_BATCH = 20
_LEASE_S = 60.0
"""How long a relay holds the deliveries it leased; it stops using a batch after half of it."""
_MAX_PRUNE_INTERVAL_S = 3600.0
_MAX_ERROR_CHARS = 2000
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("quarry.events")


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


class Relay:
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
        self.module = module
        self.db = db
        self._tables = _sql.Tables(outbox.table, outbox.deliveries)
        self._subs = subscriptions
        self._retry = retry
        self._poll_s = poll_s
        self._retention_s = retention_s
        self._log = logger
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._next_prune = 0.0
        # drain(): each request gets a number; it is answered by the first pass that began after
        # it and found nothing outstanding.
        self._requested = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # --- lifecycle (event-loop thread) ------------------------------------------------------

    def start(self) -> None:
        """Start the relay task on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup, self._stopping = asyncio.Event(), asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"quarry-events-{self.module}")

    def request_stop(self) -> None:
        """Ask the relay to stop after the handler in flight, if any."""
        self._stopping.set()
        self._wakeup.set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running relay task (``None`` before :meth:`start`)."""
        return self._task

    def wake(self) -> None:
        """Make the relay look for work now. Safe from any thread, and before :meth:`start`."""
        loop = self._loop
        if loop is None:
            return
        # A closed loop raises RuntimeError: the events then wait for the next start.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wakeup.set)

    def settled(self) -> asyncio.Future[None]:
        """A future resolved once nothing this process can deliver is outstanding."""
        if self._task is None or self._task.done() or self._loop is None:
            raise RuntimeError(f"the event relay of {self.module} is not running")
        self._requested += 1
        future = self._loop.create_future()
        self._waiters.append((self._requested, future))
        self._wakeup.set()
        return future

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wakeup.clear()
                generation = self._requested
                try:
                    delay = await self._pass(generation)
                except Exception:
                    self._log.exception(
                        "event relay pass failed; retrying", extra={"publisher": self.module}
                    )
                    await _wait(self._stopping, self._poll_s)
                    continue
                if delay > 0:
                    await _wait(self._wakeup, delay)
        finally:
            self._answer_all(RuntimeError(f"the event relay of {self.module} stopped"))

    async def _pass(self, generation: int) -> float:
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
            self._answer(generation)
        if work.next_due is None:
            return self._poll_s
        return min(work.next_due - now, self._poll_s)

    async def _deliver_batch(self, claimed: list[_sql.Claimed], token: str) -> None:
        leased_at, done = time.monotonic(), 0
        try:
            for delivery in claimed:
                if self._stopping.is_set() or time.monotonic() - leased_at > _LEASE_S / 2:
                    break
                await self._deliver(delivery, token)
                done += 1
        finally:
            if done < len(claimed):  # give back what was not attempted (stop, lease, error)
                await asyncio.shield(self.db.write(lambda c: _sql.release(c, self._tables, token)))

    async def _deliver(self, c: _sql.Claimed, token: str) -> None:
        attempt = c.attempts + 1
        error = await self._call_handler(c, attempt)
        retry_at = None
        if error is not None and attempt < self._retry.max_attempts:
            retry_at = time.time() + self._retry.delay(attempt)
        await self.db.write(
            lambda conn: _sql.finish(
                conn, self._tables, c, token=token, now=time.time(), error=error, retry_at=retry_at
            )
        )

    async def _call_handler(self, c: _sql.Claimed, attempt: int) -> str | None:
        """Decode and handle one delivery; answer the error text, or ``None`` on success."""
        sub = self._subs.get(c.type, c.subscriber)
        if sub is None:  # cannot happen: only registered pairs are claimed, and none go away
            return f"{c.subscriber} does not handle {c.type} here"
        meta = EventMeta(
            id=c.event_id,
            type=c.type,
            publisher=self.module,
            created_at=c.created_at,
            attempt=attempt,
            traceparent=c.traceparent,
        )
        parent = _PROPAGATOR.extract({"traceparent": c.traceparent}) if c.traceparent else None
        attributes: dict[str, AttributeValue] = {
            "quarry.event.id": c.event_id,
            "quarry.event.type": c.type,
            "quarry.event.publisher": self.module,
            "quarry.event.subscriber": c.subscriber,
            "quarry.event.attempt": attempt,
        }
        with _tracer.start_as_current_span(
            f"event {c.type} -> {c.subscriber}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                await sub.handler(sub.decoder.decode(c.payload), meta)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                self._log.warning(
                    "event handler failed",
                    exc_info=True,
                    extra={**attributes, "max_attempts": self._retry.max_attempts},
                )
                return (str(exc) or repr(exc))[:_MAX_ERROR_CHARS]
        return None

    # --- drain bookkeeping ------------------------------------------------------------------

    def _answer(self, generation: int) -> None:
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target <= generation:
                future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiters = waiting

    def _answer_all(self, error: Exception) -> None:
        for _target, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters = []


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` pass."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
