"""Domain events: the transactional outbox and the relay that delivers it."""

from app.kernel.events.bus import EventBus, EventHandler, EventMeta
from app.kernel.events.outbox import Outbox, create_outbox_tables, event_type_name, outbox_tables

__all__ = [
    "EventBus",
    "EventHandler",
    "EventMeta",
    "Outbox",
    "create_outbox_tables",
    "event_type_name",
    "outbox_tables",
]
