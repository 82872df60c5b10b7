"""Who handles which event: the handler signature, its envelope and the subscription registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from app.kernel.events.outbox import event_type_name

__all__ = ["EventHandler", "EventMeta", "Subscription", "Subscriptions"]


class EventMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Envelope data handed to a handler with the event.

    Handlers are idempotent by ``id``: a delivery may be repeated (at-least-once), but never
    after it completed.
    """

    id: str
    """The event's id, the same for every subscriber and every attempt."""
    type: str
    """The event's wire name (its Struct tag)."""
    publisher: str
    """The module that published the event."""
    created_at: float
    """When the event was written, in seconds since the epoch."""
    attempt: int
    """This delivery's attempt number, starting at 1."""
    traceparent: str | None = None
    """The W3C trace context of the publishing transaction, if it had one."""


EventHandler = Callable[[Any, EventMeta], Awaitable[None]]
"""An async function called with the decoded event and its :class:`EventMeta`."""


@dataclass(frozen=True)
class Subscription:
    """One subscriber's handler for one event type, with the decoder for its payload."""

    subscriber: str
    event_type: type
    handler: EventHandler
    decoder: msgspec.msgpack.Decoder[Any] = field(repr=False)


class Subscriptions:
    """The handlers registered in this process, by event type name and subscriber."""

    def __init__(self) -> None:
        self._by_type: dict[str, dict[str, Subscription]] = {}

    def add(self, subscriber: str, event_type: type, handler: EventHandler) -> None:
        """Register ``handler`` as ``subscriber``'s for ``event_type`` (once per pair)."""
        if not (isinstance(event_type, type) and issubclass(event_type, msgspec.Struct)):
            raise TypeError(f"events are msgspec Structs, not {event_type!r}")
        name = event_type_name(event_type)
        handlers = self._by_type.setdefault(name, {})
        if subscriber in handlers:
            raise ValueError(f"{subscriber} already subscribes to {name}")
        decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(event_type)
        handlers[subscriber] = Subscription(subscriber, event_type, handler, decoder)

    def get(self, type_name: str, subscriber: str) -> Subscription | None:
        """``subscriber``'s subscription to ``type_name``, if it has one here."""
        return self._by_type.get(type_name, {}).get(subscriber)

    def subscribers_of(self, type_name: str) -> list[str]:
        """The subscribers of ``type_name``, sorted."""
        return sorted(self._by_type.get(type_name, {}))

    def pairs(self) -> list[tuple[str, str]]:
        """Every ``(event type name, subscriber)`` this process can deliver."""
        return [(name, sub) for name, subs in self._by_type.items() for sub in subs]
