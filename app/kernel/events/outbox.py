"""The transactional outbox: events are rows written in the same transaction as the state change.

Each publishing module owns two tables in its own database, ``<module>_outbox`` (one row per
event) and ``<module>_event_deliveries`` (one row per event and subscriber). The relay in
:mod:`app.kernel.events.bus` delivers them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["Outbox", "create_outbox_tables", "event_type_name", "outbox_tables"]

_ENCODER = msgspec.msgpack.Encoder()


def event_type_name(event_type: type) -> str:
    """The wire name of an event Struct: its tag (the class name unless the Struct says otherwise)."""
    tag = event_type.__struct_config__.tag  # type: ignore[attr-defined]
    return str(tag) if isinstance(tag, str) else event_type.__name__


def outbox_tables(module: str, metadata: sa.MetaData | None = None) -> tuple[sa.Table, sa.Table]:
    """The outbox and delivery tables of ``module`` (``metadata`` defaults to a fresh one)."""
    metadata = metadata if metadata is not None else sa.MetaData()
    outbox = sa.Table(
        f"{module}_outbox",
        metadata,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("traceparent", sa.String(100), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("dispatched", sa.Boolean, nullable=False, default=False, index=True),
    )
    deliveries = sa.Table(
        f"{module}_event_deliveries",
        metadata,
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("subscriber", sa.String(100), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    return outbox, deliveries


def create_outbox_tables(op: Any, module: str) -> None:
    """Create ``module``'s outbox tables from an alembic migration (``op`` is ``alembic.op``)."""
    outbox, deliveries = outbox_tables(module)
    outbox.metadata.create_all(op.get_bind(), tables=[outbox, deliveries])


class Outbox:
    """Writes a module's events into its outbox inside the caller's transaction."""

    def __init__(self, module: str, publishes: tuple[type, ...] = ()) -> None:
        self.module = module
        self.publishes = {event_type_name(t): t for t in publishes}
        self.table, self.deliveries = outbox_tables(module)
        self.on_commit: Callable[[], None] = lambda: None
        """Called after a transaction that added events commits (the relay sets it)."""

    def add(self, conn: Connection, event: msgspec.Struct, *, traceparent: str | None = None) -> str:
        """Insert ``event`` in ``conn``'s transaction and answer its id."""
        name = event_type_name(type(event))
        if name not in self.publishes:
            raise TypeError(f"{self.module} does not declare that it publishes {name}")
        event_id = str(uuid.uuid4())
        conn.execute(
            self.table.insert().values(
                id=event_id,
                type=name,
                payload=_ENCODER.encode(event),
                traceparent=traceparent,
                created_at=time.time(),
                dispatched=False,
            )
        )
        if not conn.info.get("quarry_outbox_hooked"):
            conn.info["quarry_outbox_hooked"] = True
            sa.event.listen(conn, "commit", self._committed, once=True)
        return event_id

    def _committed(self, conn: Connection) -> None:
        conn.info.pop("quarry_outbox_hooked", None)
        self.on_commit()
