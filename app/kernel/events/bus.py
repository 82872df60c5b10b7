"""The in-process event bus: relays each publisher's outbox to the subscribers of this process.

Delivery is at-least-once. Every event becomes one delivery per subscriber, completed by event
id; a failing handler is retried with exponential backoff and jitter, and after ``max_attempts``
the delivery is ``failed`` with its last error (see :mod:`app.kernel.events.admin` to list and
resubmit those). Completed deliveries are pruned after ``retention_s``. A handler is never
called for a delivery that already completed, but may be called again for one that was
interrupted, so handlers are idempotent by :attr:`EventMeta.id`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from app.kernel.events._looping import settle, stop_loops
from app.kernel.events._relay import Relay, RetryPolicy
from app.kernel.events._subscriptions import EventHandler, EventMeta, Subscriptions

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events.outbox import Outbox

__all__ = ["EventBus", "EventHandler", "EventMeta"]


class EventBus:
    """Delivers the outbox rows of every registered publisher to the subscribers registered here.

    Register publishers (:meth:`add_publisher`) and subscribers (:meth:`subscribe`), then
    :meth:`start` one relay task per publisher on the running loop; :meth:`stop` ends them.
    """

    def __init__(
        self,
        *,
        max_attempts: int,
        retry_base_s: float,
        poll_s: float,
        retention_s: float,
        logger: logging.Logger | None = None,
    ) -> None:
        self._retry = RetryPolicy(max_attempts=max_attempts, base_s=retry_base_s)
        self._poll_s = poll_s
        self._retention_s = retention_s
        self._log = logger if logger is not None else logging.getLogger("quarry.events")
        self._subscriptions = Subscriptions()
        self._relays: dict[str, Relay] = {}
        self._running = False

    def add_publisher(self, module: str, db: Database, outbox: Outbox) -> None:
        """Relay ``module``'s ``outbox`` (stored in ``db``); call before :meth:`start`.

        Sets ``outbox.on_commit`` to wake the relay; the commit may happen on any thread.
        """
        if self._running:
            raise RuntimeError("add publishers before the event bus starts")
        if module in self._relays:
            raise ValueError(f"{module} is already an event publisher")
        if outbox.module != module:
            raise ValueError(f"the outbox of {outbox.module} cannot publish for {module}")
        relay = Relay(
            module=module,
            db=db,
            outbox=outbox,
            subscriptions=self._subscriptions,
            retry=self._retry,
            poll_s=self._poll_s,
            retention_s=self._retention_s,
            logger=self._log,
        )
        self._relays[module] = relay
        outbox.on_commit = relay.wake

    def subscribe(self, subscriber: str, event_type: type, handler: EventHandler) -> None:
        """Call ``handler`` for every ``event_type`` event published from now on.

        Events are fanned out to the subscribers registered when the relay dispatches them, so
        subscribe before :meth:`start` to receive the events already waiting.
        """
        self._subscriptions.add(subscriber, event_type, handler)

    def subscribers_of(self, event_type_name: str) -> list[str]:
        """The modules subscribed here to the event named ``event_type_name``, sorted."""
        return self._subscriptions.subscribers_of(event_type_name)

    async def start(self) -> None:
        """Start one relay task per publisher on the running loop (no-op when running)."""
        if self._running:
            return
        for relay in self._relays.values():
            relay.start()
        self._running = True

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop every relay, letting a handler in flight finish for up to ``grace_s`` seconds.

        Relays still busy after that are cancelled; what they had not finished is delivered
        again later.
        """
        if not self._running:
            return
        self._running = False
        await stop_loops(list(self._relays.values()), grace_s, self._log, "event relay")

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - a bound, not a deadline
        """Wait until nothing this process can deliver is outstanding.

        Every event committed before the call is dispatched, and every delivery to a subscriber
        registered here is completed or failed (pending retries are waited for). Raises
        :class:`TimeoutError` after ``timeout`` seconds and :class:`RuntimeError` when the bus
        is not running.
        """
        if not self._running:
            raise RuntimeError("the event bus is not running")
        relays = list(self._relays.values())
        try:
            async with asyncio.timeout(timeout):
                await settle(relays)
        except TimeoutError:
            raise TimeoutError(f"event deliveries still outstanding after {timeout} s") from None
