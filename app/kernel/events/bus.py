"""Placeholder until the relay lands: the names the rest of the kernel imports."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

__all__ = ["EventBus", "EventHandler", "EventMeta"]


class EventMeta(msgspec.Struct, frozen=True, kw_only=True):
    """Envelope data handed to a handler with the event."""

    id: str
    type: str
    publisher: str
    created_at: float
    attempt: int


EventHandler = Callable[[Any, EventMeta], Awaitable[None]]


class EventBus:
    """Delivers outbox rows to subscribers."""
