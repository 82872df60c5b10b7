"""Inspect and repair event deliveries without a running bus (``quarry events ...``).

There are two kinds of table, one per transport:

- in-process (``QUARRY_EVENTS_URL=memory://``): a *publisher's* deliveries, one row per event and
  subscriber, in the publishing module's database: :func:`list_failed`, :func:`retry_failed`,
  :func:`list_events`, :func:`prune`;
- Redis Streams: a *subscriber's* inbox, one row per event it took, in the subscribing module's
  database: :func:`list_failed_inbox`, :func:`retry_failed_inbox`.

A tool that does not know the transport calls both for every module: each answers nothing for
a module that has no table of its kind. Each function takes the module's
:class:`~app.kernel.db.Database` and name, and runs its transaction on the calling thread (from
async code, wrap a call in ``asyncio.to_thread``). A bus running elsewhere picks resubmitted
deliveries up within its poll interval.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import msgspec
import sqlalchemy as sa

from app.kernel.events import _inbox, _sql
from app.kernel.events.outbox import outbox_tables

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from app.kernel.db import Database

__all__ = [
    "DeliveryState",
    "EventRecord",
    "FailedDelivery",
    "list_events",
    "list_failed",
    "list_failed_inbox",
    "prune",
    "retry_failed",
    "retry_failed_inbox",
]


class FailedDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery that used up its attempts (from a publisher's deliveries or a subscriber's
    inbox: the same shape either way)."""

    event_id: str
    type: str
    subscriber: str
    attempts: int
    last_error: str | None
    updated_at: float
    """When the last attempt failed, in seconds since the epoch."""


class DeliveryState(msgspec.Struct, frozen=True, kw_only=True):
    """Where one subscriber's delivery of an event stands."""

    subscriber: str
    status: str
    """``pending``, ``completed`` or ``failed``."""
    attempts: int
    last_error: str | None


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An event in the outbox and its deliveries (none until it is dispatched)."""

    id: str
    type: str
    created_at: float
    dispatched: bool
    traceparent: str | None
    deliveries: list[DeliveryState]


@functools.cache
def _tables(module: str) -> _sql.Tables:
    outbox, deliveries = outbox_tables(module)
    return _sql.Tables(outbox, deliveries)


def _failed(r: Any, subscriber: str) -> FailedDelivery:
    """A failed row (of deliveries or an inbox) as a :class:`FailedDelivery`."""
    return FailedDelivery(
        event_id=r.event_id,
        type=r.type,
        subscriber=subscriber,
        attempts=r.attempts,
        last_error=r.last_error,
        updated_at=r.updated_at,
    )


def list_failed(db: Database, module: str) -> list[FailedDelivery]:
    """``module``'s failed deliveries, oldest failure first."""
    t = _tables(module)
    d, o = t.deliveries, t.outbox

    def query(conn: Connection) -> list[FailedDelivery]:
        rows = conn.execute(
            sa.select(
                d.c.event_id, o.c.type, d.c.subscriber, d.c.attempts, d.c.last_error, d.c.updated_at
            )
            .join(o, o.c.id == d.c.event_id)
            .where(d.c.status == _sql.FAILED)
            .order_by(d.c.updated_at, d.c.event_id, d.c.subscriber)
        ).all()
        return [_failed(r, r.subscriber) for r in rows]

    return db.read_sync(query)


def retry_failed(
    db: Database, module: str, event_id: str | None = None, subscriber: str | None = None
) -> int:
    """Resubmit ``module``'s failed deliveries (all, or those of ``event_id`` and/or
    ``subscriber``) with a fresh set of attempts, due now; answer how many."""
    d = _tables(module).deliveries
    conditions: list[sa.ColumnElement[bool]] = []
    if event_id is not None:
        conditions.append(d.c.event_id == event_id)
    if subscriber is not None:
        conditions.append(d.c.subscriber == subscriber)
    return db.write_sync(lambda conn: _sql.resubmit(conn, d, *conditions))


def list_events(db: Database, module: str, limit: int = 50) -> list[EventRecord]:
    """``module``'s newest ``limit`` events, newest first, with their deliveries."""
    t = _tables(module)
    d, o = t.deliveries, t.outbox

    def query(conn: Connection) -> list[EventRecord]:
        events = conn.execute(
            sa.select(o.c.id, o.c.type, o.c.created_at, o.c.dispatched, o.c.traceparent)
            .order_by(o.c.seq.desc())
            .limit(limit)
        ).all()
        states: dict[str, list[DeliveryState]] = {e.id: [] for e in events}
        if states:
            for r in conn.execute(
                sa.select(d.c.event_id, d.c.subscriber, d.c.status, d.c.attempts, d.c.last_error)
                .where(d.c.event_id.in_(list(states)))
                .order_by(d.c.subscriber)
            ):
                states[r.event_id].append(
                    DeliveryState(
                        subscriber=r.subscriber,
                        status=r.status,
                        attempts=r.attempts,
                        last_error=r.last_error,
                    )
                )
        return [
            EventRecord(
                id=e.id,
                type=e.type,
                created_at=e.created_at,
                dispatched=bool(e.dispatched),
                traceparent=e.traceparent,
                deliveries=states[e.id],
            )
            for e in events
        ]

    return db.read_sync(query)


def prune(db: Database, module: str, *, retention_s: float, now: float | None = None) -> int:
    """Delete ``module``'s deliveries completed more than ``retention_s`` ago and the events
    left with no delivery; answer how many events went. Failed and pending ones stay."""
    cutoff = (now if now is not None else time.time()) - retention_s
    return db.write_sync(lambda conn: _sql.prune(conn, _tables(module), cutoff))


def list_failed_inbox(db: Database, subscriber: str) -> list[FailedDelivery]:
    """``subscriber``'s failed deliveries over Redis Streams (its inbox, in its own ``db``),
    oldest failure first; none when it has no inbox table (it never subscribed over streams).
    """
    t = _inbox.cached_table(subscriber)

    def query(conn: Connection) -> list[FailedDelivery]:
        if not _inbox.exists(conn, t):
            return []
        rows = conn.execute(
            sa.select(t.c.event_id, t.c.type, t.c.attempts, t.c.last_error, t.c.updated_at)
            .where(t.c.status == _sql.FAILED)
            .order_by(t.c.updated_at, t.c.event_id)
        ).all()
        return [_failed(r, subscriber) for r in rows]

    return db.read_sync(query)


def retry_failed_inbox(db: Database, subscriber: str, event_id: str | None = None) -> int:
    """Resubmit ``subscriber``'s failed deliveries over Redis Streams (all, or that of
    ``event_id``) with a fresh set of attempts, due now; answer how many (0 without an inbox).

    The subscriber's running consumers deliver them within their poll interval.
    """
    t = _inbox.cached_table(subscriber)
    conditions = [] if event_id is None else [t.c.event_id == event_id]

    def update(conn: Connection) -> int:
        return _sql.resubmit(conn, t, *conditions) if _inbox.exists(conn, t) else 0

    return db.write_sync(update)
