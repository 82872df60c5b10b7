"""Domain events over Redis Streams, for modules running in separate processes.

Each publishing module's outbox is relayed to the stream ``{prefix}events:{module}``. Each
subscribing module has one consumer group, named after it, on every stream carrying an event
type it handles, so each subscribing module gets each event once however many replicas it runs;
each process is one consumer of those groups (``consumer``, unique per process). A subscriber
deduplicates by event id in its inbox, ``<subscriber>_event_inbox`` in its own database, which
the bus creates with ``metadata.create_all`` when it starts (no migration needed), and retries
failures from there with exponential backoff. Entries a dead process read but never acknowledged
are reclaimed by the others after ``claim_idle_s``.

Delivery is at-least-once, as with :class:`~app.kernel.events.EventBus`: handlers are
idempotent by :attr:`EventMeta.id`. Durability across a Redis restart needs Redis persistence
(AOF). Failed deliveries are listed and resubmitted with
:func:`~app.kernel.events.admin.list_failed_inbox` and
:func:`~app.kernel.events.admin.retry_failed_inbox`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

from app.kernel.events._looping import Loop, settle, stop_loops
from app.kernel.events._relay import RetryPolicy
from app.kernel.events._subscriptions import EventHandler, Subscriptions
from app.kernel.events.bus import EventBus
from app.kernel.events.outbox import event_type_name

if TYPE_CHECKING:
    import redis.asyncio

    from app.kernel.db import Database
    from app.kernel.events._stream_consumer import StreamConsumer
    from app.kernel.events._stream_publisher import StreamPublisher
    from app.kernel.events.outbox import Outbox
    from app.kernel.settings import Settings

__all__ = ["StreamEventBus", "default_consumer_name", "make_event_bus"]

DEFAULT_STREAM_MAXLEN = 100_000
"""Entries a stream keeps at most (approximately) besides the retention trimming."""
DEFAULT_CLAIM_IDLE_S = 60.0
"""How long an entry stays with a consumer that does not acknowledge it before others take it;
also the lease on an inbox row being delivered (a handler running longer may run twice)."""
_SOCKET_SLACK_S = 10.0


def default_consumer_name() -> str:
    """``<hostname>-<pid>-<random>``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class StreamEventBus:
    """The :class:`~app.kernel.events.EventBus` surface, delivering through Redis Streams.

    Besides what ``EventBus`` takes, it needs to know the database of every subscribing module
    hosted here (:meth:`add_subscriber`: its inbox lives there) and which module publishes each
    event type it subscribes to (:meth:`declare_publisher`; :meth:`add_publisher` declares the
    local publishers).
    """

    def __init__(
        self,
        *,
        url: str,
        prefix: str = "quarry:",
        consumer: str | None = None,
        max_attempts: int,
        retry_base_s: float,
        poll_s: float,
        retention_s: float,
        stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
        claim_idle_s: float = DEFAULT_CLAIM_IDLE_S,
        logger: logging.Logger | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.consumer = consumer if consumer is not None else default_consumer_name()
        """This process's consumer name in every group."""
        self._retry = RetryPolicy(max_attempts=max_attempts, base_s=retry_base_s)
        self._poll_s = poll_s
        self._retention_s = retention_s
        self._maxlen = stream_maxlen
        self._claim_idle_s = claim_idle_s
        self._log = logger if logger is not None else logging.getLogger("quarry.events")
        self._subscriptions = Subscriptions()
        self._publishers: dict[str, StreamPublisher] = {}
        self._publisher_of: dict[str, set[str]] = {}  # event type name -> publishing modules
        self._subscriber_dbs: dict[str, Database] = {}
        self._consumers: dict[str, StreamConsumer] = {}
        self._redis: redis.asyncio.Redis | None = None
        self._running = False

    def stream(self, publisher: str) -> str:
        """The Redis key of ``publisher``'s stream."""
        return f"{self.prefix}events:{publisher}"

    # --- wiring (before start) --------------------------------------------------------------

    def add_publisher(self, module: str, db: Database, outbox: Outbox) -> None:
        """Relay ``module``'s ``outbox`` (stored in ``db``) to its stream; call before
        :meth:`start`. Sets ``outbox.on_commit`` to wake the relay (from any thread)."""
        self._before_start("add publishers")
        from app.kernel.events._stream_publisher import StreamPublisher  # imports redis

        if module in self._publishers:
            raise ValueError(f"{module} is already an event publisher")
        if outbox.module != module:
            raise ValueError(f"the outbox of {outbox.module} cannot publish for {module}")
        publisher = StreamPublisher(
            module=module,
            db=db,
            outbox=outbox,
            url=self.url,
            stream=self.stream(module),
            maxlen=self._maxlen,
            poll_s=self._poll_s,
            retention_s=self._retention_s,
            logger=self._log,
        )
        self._publishers[module] = publisher
        outbox.on_commit = publisher.wake
        self.declare_publisher(module, outbox.publishes.values())

    def declare_publisher(self, module: str, event_types: Iterable[type]) -> None:
        """Record that ``module`` (hosted here or not) publishes ``event_types``, so subscribers
        here read its stream. Repeating it adds to what was declared."""
        self._before_start("declare publishers")
        for event_type in event_types:
            self._publisher_of.setdefault(event_type_name(event_type), set()).add(module)

    def add_subscriber(self, module: str, db: Database) -> None:
        """Keep subscribing ``module``'s inbox in ``db``, its own database; before :meth:`start`."""
        self._before_start("add subscribers")
        self._subscriber_dbs[module] = db

    def subscribe(self, subscriber: str, event_type: type, handler: EventHandler) -> None:
        """Call ``handler`` for every ``event_type`` event, including those published before
        the subscriber's first start; subscribe before :meth:`start`."""
        self._before_start("subscribe")
        self._subscriptions.add(subscriber, event_type, handler)

    def subscribers_of(self, event_type_name: str) -> list[str]:
        """The modules subscribed here to the event named ``event_type_name``, sorted."""
        return self._subscriptions.subscribers_of(event_type_name)

    def _before_start(self, what: str) -> None:
        if self._running:
            raise RuntimeError(f"{what} before the event bus starts")

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create inboxes and consumer groups, then start one task per publisher and
        per subscriber on the running loop (no-op when running).

        Raises :class:`RuntimeError` when a subscriber has no database (:meth:`add_subscriber`)
        or subscribes to an event type nobody declared publishing.
        """
        if self._running:
            return
        import redis.asyncio  # lazily: importing redis takes a while and is rarely needed

        consumers = self._make_consumers()
        client = redis.asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=_SOCKET_SLACK_S,
            socket_timeout=self._poll_s + _SOCKET_SLACK_S,
        )
        try:
            for consumer in consumers.values():
                await consumer.prepare(client)
        except BaseException:
            await client.aclose()
            raise
        self._redis, self._consumers = client, consumers
        for loop in self._loops():
            loop.start()
        self._running = True

    def _make_consumers(self) -> dict[str, StreamConsumer]:
        from app.kernel.events._stream_consumer import StreamConsumer

        streams: dict[str, dict[str, str]] = {}
        for type_name, subscriber in self._subscriptions.pairs():
            publishers = self._publisher_of.get(type_name)
            if not publishers:
                raise RuntimeError(
                    f"{subscriber} subscribes to {type_name}, which no declared module publishes"
                )
            if subscriber not in self._subscriber_dbs:
                raise RuntimeError(f"{subscriber} subscribes to events but has no database here")
            for publisher in publishers:
                streams.setdefault(subscriber, {})[self.stream(publisher)] = publisher
        return {
            subscriber: StreamConsumer(
                module=subscriber,
                db=self._subscriber_dbs[subscriber],
                subscriptions=self._subscriptions,
                streams=by_stream,
                consumer=self.consumer,
                retry=self._retry,
                poll_s=self._poll_s,
                retention_s=self._retention_s,
                claim_idle_s=self._claim_idle_s,
                logger=self._log,
            )
            for subscriber, by_stream in sorted(streams.items())
        }

    def _loops(self) -> list[Loop]:
        return [*self._publishers.values(), *self._consumers.values()]

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop every task, letting a handler in flight finish for up to ``grace_s`` seconds.

        Tasks still busy after that are cancelled; what they had not finished is delivered
        again later (by this process after a restart, or by another one).
        """
        if not self._running:
            return
        self._running = False
        await stop_loops(self._loops(), grace_s, self._log, "event task")
        for consumer in self._consumers.values():
            await consumer.leave()
        for publisher in self._publishers.values():
            publisher.close()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - a bound, not a deadline
        """Wait until nothing this process can deliver is outstanding.

        First every event committed to a local publisher's outbox before the call is in its
        stream; then, for each subscriber here, every entry of its streams is acknowledged and
        its inbox holds no pending row (retries are waited for). Raises :class:`TimeoutError`
        after ``timeout`` seconds and :class:`RuntimeError` when the bus is not running.
        """
        if not self._running:
            raise RuntimeError("the event bus is not running")
        try:
            async with asyncio.timeout(timeout):
                await settle(list(self._publishers.values()))
                await settle(list(self._consumers.values()))
        except TimeoutError:
            raise TimeoutError(f"event deliveries still outstanding after {timeout} s") from None


def make_event_bus(settings: Settings, *, consumer: str | None = None) -> EventBus | StreamEventBus:
    """The event bus ``settings.events_url`` asks for: in-process for ``memory://``, else Redis
    Streams (keys under ``settings.redis_prefix``; ``consumer`` defaults to a unique name)."""
    if settings.events_url.startswith("memory://"):
        return EventBus(
            max_attempts=settings.events_max_attempts,
            retry_base_s=settings.events_retry_base_s,
            poll_s=settings.events_poll_s,
            retention_s=settings.events_retention_s,
        )
    return StreamEventBus(
        url=settings.events_url,
        prefix=settings.redis_prefix,
        consumer=consumer,
        max_attempts=settings.events_max_attempts,
        retry_base_s=settings.events_retry_base_s,
        poll_s=settings.events_poll_s,
        retention_s=settings.events_retention_s,
        stream_maxlen=settings.events_stream_maxlen,
        claim_idle_s=settings.events_claim_idle_s,
    )
