"""A subscriber's inbox: the events it took from Redis Streams, deduplicated by event id.

``<subscriber>_event_inbox`` lives in the subscribing module's own database; the kernel creates
it (``metadata.create_all``, so no migration is needed) when a :class:`StreamEventBus` starts.
A row is ``pending`` (due at ``next_attempt_at``), ``completed`` or ``failed``. A consumer
delivering it holds a lease (``claimed_by``/``claimed_until``), so replicas sharing the
database never deliver it at the same time, and a consumer that died mid-delivery loses it when
the lease lapses. These functions run inside ``Database.write``/``read`` transactions; on
PostgreSQL the rows a consumer takes are locked with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from app.kernel.events._sql import COMPLETED, PENDING, attempt_values, due_at, lease_free

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

__all__ = [
    "Envelope",
    "InboxSurvey",
    "cached_table",
    "claim",
    "ensure_table",
    "exists",
    "finish",
    "inbox_table",
    "ingest",
    "prune",
    "release",
    "survey",
]


def inbox_table(subscriber: str, metadata: sa.MetaData | None = None) -> sa.Table:
    """``subscriber``'s inbox table (``metadata`` defaults to a fresh one)."""
    metadata = metadata if metadata is not None else sa.MetaData()
    return sa.Table(
        f"{subscriber}_event_inbox",
        metadata,
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("publisher", sa.String(100), nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("traceparent", sa.String(100), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("claimed_by", sa.String(36), nullable=True),
        sa.Column("claimed_until", sa.Float, nullable=True),
    )


@functools.cache
def cached_table(subscriber: str) -> sa.Table:
    """``subscriber``'s inbox table, built once per process."""
    return inbox_table(subscriber)


def ensure_table(conn: Connection, table: sa.Table) -> None:
    """Create ``table`` unless it exists."""
    table.metadata.create_all(conn, tables=[table], checkfirst=True)


def exists(conn: Connection, table: sa.Table) -> bool:
    """Whether ``table`` exists (a module that never subscribed over streams has none)."""
    return sa.inspect(conn).has_table(table.name)


@dataclass(frozen=True)
class Envelope:
    """An event as it travels in a stream entry (and sits in an inbox row)."""

    event_id: str
    publisher: str
    type: str
    payload: bytes
    traceparent: str | None
    created_at: float
    attempts: int = 0
    """Attempts made so far (0 for an event just taken from a stream)."""

    def to_fields(self) -> dict[FieldT, EncodableT]:
        """The stream entry's fields (the publisher is the stream's name, not a field)."""
        return {
            "id": self.event_id,
            "type": self.type,
            "payload": self.payload,
            "traceparent": self.traceparent or "",
            "created_at": repr(self.created_at),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes], publisher: str) -> Envelope:
        """Read a stream entry's fields back; raises ``KeyError``/``ValueError`` when malformed."""
        traceparent = fields.get(b"traceparent", b"").decode()
        return cls(
            event_id=fields[b"id"].decode(),
            publisher=publisher,
            type=fields[b"type"].decode(),
            payload=fields[b"payload"],
            traceparent=traceparent or None,
            created_at=float(fields[b"created_at"]),
        )


def ingest(
    conn: Connection,
    table: sa.Table,
    envelopes: Sequence[Envelope],
    *,
    token: str,
    now: float,
    lease_s: float,
) -> set[str]:
    """Insert the events not in the inbox yet, leased under ``token``; answer their ids.

    An event already there (whatever its status) is left alone: that is the deduplication.
    """
    if not envelopes:
        return set()
    values = [
        {
            "event_id": e.event_id,
            "publisher": e.publisher,
            "type": e.type,
            "payload": e.payload,
            "traceparent": e.traceparent,
            "created_at": e.created_at,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "updated_at": now,
            "claimed_by": token,
            "claimed_until": now + lease_s,
        }
        for e in envelopes
    ]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(insert(table).values(values).on_conflict_do_nothing(index_elements=["event_id"]))
    ids = [e.event_id for e in envelopes]
    rows = conn.execute(
        sa.select(table.c.event_id).where(table.c.event_id.in_(ids), table.c.claimed_by == token)
    )
    return {r.event_id for r in rows}


def claim(
    conn: Connection,
    table: sa.Table,
    types: Collection[str],
    *,
    token: str,
    now: float,
    lease_s: float,
    limit: int,
) -> list[Envelope]:
    """Lease up to ``limit`` due pending rows of ``types``, oldest event first."""
    if not types:
        return []
    t = table
    rows = conn.execute(
        sa.select(
            t.c.event_id,
            t.c.publisher,
            t.c.type,
            t.c.payload,
            t.c.traceparent,
            t.c.created_at,
            t.c.attempts,
        )
        .where(
            t.c.status == PENDING,
            t.c.type.in_(list(types)),
            t.c.next_attempt_at <= now,
            lease_free(t, now),
        )
        .order_by(t.c.created_at, t.c.event_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    conn.execute(
        t.update()
        .where(t.c.event_id.in_([r.event_id for r in rows]))
        .values(claimed_by=token, claimed_until=now + lease_s)
    )
    return [
        Envelope(
            event_id=r.event_id,
            publisher=r.publisher,
            type=r.type,
            payload=bytes(r.payload),
            traceparent=r.traceparent,
            created_at=r.created_at,
            attempts=r.attempts,
        )
        for r in rows
    ]


def finish(
    conn: Connection,
    table: sa.Table,
    e: Envelope,
    *,
    token: str,
    now: float,
    error: str | None,
    retry_at: float | None,
) -> None:
    """Record one attempt: completed (no ``error``), pending until ``retry_at``, or failed."""
    values = attempt_values(e.attempts + 1, now=now, error=error, retry_at=retry_at)
    conn.execute(
        table.update()
        .where(table.c.event_id == e.event_id, table.c.claimed_by == token)
        .values(**values)
    )


def release(conn: Connection, table: sa.Table, token: str) -> None:
    """Give back the rows still leased under ``token`` (they were not attempted)."""
    conn.execute(
        table.update()
        .where(table.c.claimed_by == token)
        .values(claimed_by=None, claimed_until=None)
    )


@dataclass(frozen=True)
class InboxSurvey:
    """The inbox's outstanding work, seen without taking any lock."""

    pending: int
    """Rows of the types handled here that are not completed or failed yet."""
    next_due: float | None
    """When the earliest of those is due (a lease held elsewhere makes it due when it lapses)."""


def survey(conn: Connection, table: sa.Table, types: Collection[str]) -> InboxSurvey:
    """Look at the outstanding work in one read."""
    if not types:
        return InboxSurvey(pending=0, next_due=None)
    t = table
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.min(due_at(t))).where(
            t.c.status == PENDING, t.c.type.in_(list(types))
        )
    ).one()
    return InboxSurvey(pending=int(row[0]), next_due=float(row[1]) if row[1] is not None else None)


def prune(conn: Connection, table: sa.Table, cutoff: float) -> int:
    """Delete rows completed before ``cutoff``; answer how many went."""
    result = conn.execute(
        table.delete().where(table.c.status == COMPLETED, table.c.updated_at < cutoff)
    )
    return int(result.rowcount)
