"""Domain events: the transactional outbox, the relay that delivers it, and its admin functions."""

from app.kernel.events.admin import (
    DeliveryState,
    EventRecord,
    FailedDelivery,
    list_events,
    list_failed,
    prune,
    retry_failed,
)
from app.kernel.events.bus import EventBus, EventHandler, EventMeta
from app.kernel.events.outbox import Outbox, create_outbox_tables, event_type_name, outbox_tables

__all__ = [
    "DeliveryState",
    "EventBus",
    "EventHandler",
    "EventMeta",
    "EventRecord",
    "FailedDelivery",
    "Outbox",
    "create_outbox_tables",
    "event_type_name",
    "list_events",
    "list_failed",
    "outbox_tables",
    "prune",
    "retry_failed",
]
