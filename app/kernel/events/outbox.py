"""The transactional outbox: events are rows written in the same transaction as the state change.

Each publishing module owns two tables in its own database, ``<module>_outbox`` (one row per
event) and ``<module>_event_deliveries`` (one row per event and subscriber). The relay in
:mod:`app.kernel.events.bus` delivers them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.engine import Connection, Engine

__all__ = ["Outbox", "create_outbox_tables", "event_type_name", "outbox_tables"]

_ENCODER = msgspec.msgpack.Encoder()
_PROPAGATOR = TraceContextTextMapPropagator()
_log = logging.getLogger("quarry.events")


def event_type_name(event_type: type) -> str:
    """An event Struct's wire name: its tag (the class name unless the Struct says otherwise)."""
    tag = event_type.__struct_config__.tag  # type: ignore[attr-defined]
    return str(tag) if isinstance(tag, str) else event_type.__name__


def outbox_tables(module: str, metadata: sa.MetaData | None = None) -> tuple[sa.Table, sa.Table]:
    """The outbox and delivery tables of ``module`` (``metadata`` defaults to a fresh one).

    A delivery is ``pending`` (due at ``next_attempt_at``), ``completed`` or ``failed``. A relay
    delivering it holds a lease: ``claimed_by`` names the claim and ``claimed_until`` is when it
    lapses, so several replicas sharing the database never deliver it at the same time.
    """
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
        sa.Column("claimed_by", sa.String(36), nullable=True),
        sa.Column("claimed_until", sa.Float, nullable=True),
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
        """Called once a transaction that added events has committed (the relay sets it).

        It runs on the committing thread, after the commit, when the connection goes back to
        the pool (``Database.write`` returns only after that); a rolled-back transaction never
        calls it.
        """

    def add(
        self, conn: Connection, event: msgspec.Struct, *, traceparent: str | None = None
    ) -> str:
        """Insert ``event`` in ``conn``'s transaction and answer its id.

        ``traceparent`` defaults to the current span's, so a delivery joins the publisher's trace.
        """
        name = event_type_name(type(event))
        if name not in self.publishes:
            raise TypeError(f"{self.module} does not declare that it publishes {name}")
        event_id = str(uuid.uuid4())
        conn.execute(
            self.table.insert().values(
                id=event_id,
                type=name,
                payload=_ENCODER.encode(event),
                traceparent=traceparent if traceparent is not None else _current_traceparent(),
                created_at=time.time(),
                dispatched=False,
            )
        )
        _watch(conn.engine)
        conn.info.setdefault(_PENDING, set()).add(self)
        return event_id

    def _notify(self) -> None:
        try:
            self.on_commit()
        except Exception:  # a failing hook must never break the caller's connection handling
            _log.exception("outbox on_commit hook failed", extra={"module": self.module})


def _current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


# Which outboxes a connection's open transaction added to, then which ones committed. The keys
# live in the DBAPI connection's info (it survives pool check-in), so both are always cleared:
# on commit, on rollback and on check-in.
_PENDING = "quarry_outbox_pending"
_COMMITTED = "quarry_outbox_committed"
_watch_lock = threading.Lock()


def _watch(engine: Engine) -> None:
    """Install the engine-wide listeners that turn commits into ``on_commit`` calls (once)."""
    if sa.event.contains(engine, "commit", _on_commit):
        return
    with _watch_lock:
        if not sa.event.contains(engine, "commit", _on_commit):
            sa.event.listen(engine, "rollback", _on_rollback)
            sa.event.listen(engine, "checkin", _on_checkin)
            sa.event.listen(engine, "commit", _on_commit)


def _on_commit(conn: Connection) -> None:
    # ConnectionEvents.commit fires just *before* the DBAPI commit: remember, notify at check-in.
    info = _info(conn)
    pending: set[Outbox] | None = info.pop(_PENDING, None) if info is not None else None
    if info is not None and pending:
        info.setdefault(_COMMITTED, set()).update(pending)


def _on_rollback(conn: Connection) -> None:
    info = _info(conn)
    if info is not None:
        info.pop(_PENDING, None)


def _info(conn: Connection) -> dict[Any, Any] | None:
    """The DBAPI connection's info, or ``None`` once the connection is invalidated or closed."""
    if conn.invalidated or conn.closed:
        return None
    return conn.info


def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
    if record is None:
        return
    record.info.pop(_PENDING, None)
    committed: set[Outbox] | None = record.info.pop(_COMMITTED, None)
    for outbox in committed or ():
        outbox._notify()
