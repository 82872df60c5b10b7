"""Domain events: the transactional outbox, the buses that deliver it (in-process, or over Redis
Streams), and their admin functions."""

from app.kernel.events.admin import (
    DeliveryState,
    EventRecord,
    FailedDelivery,
    list_events,
    list_failed,
    list_failed_inbox,
    prune,
    retry_failed,
    retry_failed_inbox,
)
from app.kernel.events.bus import EventBus, EventHandler, EventMeta
from app.kernel.events.outbox import Outbox, create_outbox_tables, event_type_name, outbox_tables
from app.kernel.events.streams import StreamEventBus, make_event_bus

__all__ = [
    "DeliveryState",
    "EventBus",
    "EventHandler",
    "EventMeta",
    "EventRecord",
    "FailedDelivery",
    "Outbox",
    "StreamEventBus",
    "create_outbox_tables",
    "event_type_name",
    "list_events",
    "list_failed",
    "list_failed_inbox",
    "make_event_bus",
    "outbox_tables",
    "prune",
    "retry_failed",
    "retry_failed_inbox",
]
