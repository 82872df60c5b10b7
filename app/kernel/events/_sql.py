"""The relay's statements, as sync functions run inside ``Database.write``/``read`` transactions.

The lease, attempt and resubmission pieces (:func:`lease_free`, :func:`due_at`,
:func:`attempt_values`, :func:`resubmit`) also serve a subscriber's inbox (``_inbox``), whose
rows have the same delivery columns.

On PostgreSQL the rows a relay takes are locked with ``FOR UPDATE SKIP LOCKED``, so replicas
sharing a database split the work; SQLite ignores the clause (its writers are serialised).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = [
    "COMPLETED",
    "FAILED",
    "PENDING",
    "Claimed",
    "Survey",
    "Tables",
    "attempt_values",
    "claim",
    "dispatch",
    "due_at",
    "finish",
    "lease_free",
    "prune",
    "release",
    "resubmit",
    "survey",
]

PENDING, COMPLETED, FAILED = "pending", "completed", "failed"


def lease_free(table: sa.Table, now: float) -> sa.ColumnElement[bool]:
    """The row is leased to nobody, or its lease has lapsed by ``now``."""
    return sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until <= now)


def due_at(table: sa.Table) -> sa.ColumnElement[float]:
    """When a pending row is due: its next attempt, or when a lease held elsewhere lapses."""
    c = table.c
    return sa.case((c.claimed_until > c.next_attempt_at, c.claimed_until), else_=c.next_attempt_at)


def attempt_values(
    attempts: int, *, now: float, error: str | None, retry_at: float | None
) -> dict[str, object]:
    """The columns recording attempt number ``attempts``: completed (no ``error``), pending
    until ``retry_at``, or failed; the lease is given up."""
    status = COMPLETED if error is None else (PENDING if retry_at is not None else FAILED)
    values: dict[str, object] = {
        "status": status,
        "attempts": attempts,
        "updated_at": now,
        "claimed_by": None,
        "claimed_until": None,
    }
    if error is not None:
        values["last_error"] = error
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    return values


def resubmit(conn: Connection, table: sa.Table, *conditions: sa.ColumnElement[bool]) -> int:
    """Make the failed rows matching ``conditions`` pending again, with a fresh set of
    attempts, due now; answer how many."""
    now = time.time()
    result = conn.execute(
        table.update()
        .where(table.c.status == FAILED, *conditions)
        .values(
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            updated_at=now,
            claimed_by=None,
            claimed_until=None,
        )
    )
    return int(result.rowcount)


@dataclass(frozen=True)
class Tables:
    """A publisher's ``<module>_outbox`` and ``<module>_event_deliveries``."""

    outbox: sa.Table
    deliveries: sa.Table


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one relay, with the event it carries."""

    event_id: str
    subscriber: str
    type: str
    payload: bytes
    created_at: float
    traceparent: str | None
    attempts: int


def dispatch(
    conn: Connection, t: Tables, subscribers_of: Callable[[str], list[str]], now: float, limit: int
) -> int:
    """Fan undispatched events out into one pending delivery per subscriber; answer how many."""
    o = t.outbox
    rows = conn.execute(
        sa.select(o.c.seq, o.c.id, o.c.type)
        .where(o.c.dispatched == sa.false())
        .order_by(o.c.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return 0
    values = [
        {
            "event_id": row.id,
            "subscriber": subscriber,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "updated_at": now,
        }
        for row in rows
        for subscriber in subscribers_of(row.type)
    ]
    if values:
        conn.execute(t.deliveries.insert(), values)
    conn.execute(o.update().where(o.c.seq.in_([r.seq for r in rows])).values(dispatched=True))
    return len(rows)


def _deliverable(t: Tables, pairs: Sequence[tuple[str, str]]) -> sa.ColumnElement[bool]:
    d, o = t.deliveries, t.outbox
    return sa.and_(
        d.c.status == PENDING,
        sa.or_(*(sa.and_(o.c.type == name, d.c.subscriber == sub) for name, sub in pairs)),
    )


def claim(
    conn: Connection,
    t: Tables,
    pairs: Sequence[tuple[str, str]],
    *,
    token: str,
    now: float,
    lease_s: float,
    limit: int,
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries this process can handle, in publication order."""
    if not pairs:
        return []
    d, o = t.deliveries, t.outbox
    rows = conn.execute(
        sa.select(
            d.c.event_id,
            d.c.subscriber,
            d.c.attempts,
            o.c.type,
            o.c.payload,
            o.c.created_at,
            o.c.traceparent,
        )
        .join(o, o.c.id == d.c.event_id)
        .where(
            _deliverable(t, pairs),
            d.c.next_attempt_at <= now,
            lease_free(d, now),
        )
        .order_by(o.c.seq, d.c.subscriber)
        .limit(limit)
        .with_for_update(of=d, skip_locked=True)
    ).all()
    if not rows:
        return []
    conn.execute(
        d.update()
        .where(d.c.event_id == sa.bindparam("e"), d.c.subscriber == sa.bindparam("s"))
        .values(claimed_by=token, claimed_until=now + lease_s),
        [{"e": r.event_id, "s": r.subscriber} for r in rows],
    )
    return [
        Claimed(
            event_id=r.event_id,
            subscriber=r.subscriber,
            type=r.type,
            payload=bytes(r.payload),
            created_at=r.created_at,
            traceparent=r.traceparent,
            attempts=r.attempts,
        )
        for r in rows
    ]


def finish(
    conn: Connection,
    t: Tables,
    c: Claimed,
    *,
    token: str,
    now: float,
    error: str | None,
    retry_at: float | None,
) -> None:
    """Record one attempt: completed (no ``error``), pending until ``retry_at``, or failed."""
    d = t.deliveries
    values = attempt_values(c.attempts + 1, now=now, error=error, retry_at=retry_at)
    conn.execute(
        d.update()
        .where(d.c.event_id == c.event_id, d.c.subscriber == c.subscriber, d.c.claimed_by == token)
        .values(**values)
    )


def release(conn: Connection, t: Tables, token: str) -> None:
    """Give back the deliveries still leased under ``token`` (they were not attempted)."""
    d = t.deliveries
    conn.execute(
        d.update().where(d.c.claimed_by == token).values(claimed_by=None, claimed_until=None)
    )


@dataclass(frozen=True)
class Survey:
    """What a relay has to do, seen without taking any lock."""

    undispatched: bool
    """Some events still await fan-out."""
    pending: int
    """Deliveries this process can handle that are not completed or failed yet."""
    next_due: float | None
    """When the earliest of those is due (a lease held elsewhere makes it due when it lapses)."""


def survey(conn: Connection, t: Tables, pairs: Sequence[tuple[str, str]]) -> Survey:
    """Look at the outstanding work in one read."""
    d, o = t.deliveries, t.outbox
    undispatched = conn.execute(
        sa.select(sa.exists().where(o.c.dispatched == sa.false()))
    ).scalar_one()
    if not pairs:
        return Survey(undispatched=bool(undispatched), pending=0, next_due=None)
    row = conn.execute(
        sa.select(sa.func.count(), sa.func.min(due_at(d)))
        .select_from(d.join(o, o.c.id == d.c.event_id))
        .where(_deliverable(t, pairs))
    ).one()
    return Survey(
        undispatched=bool(undispatched),
        pending=int(row[0]),
        next_due=float(row[1]) if row[1] is not None else None,
    )


def prune(conn: Connection, t: Tables, cutoff: float) -> int:
    """Delete deliveries completed before ``cutoff``, then events dispatched before it that no
    delivery refers to any more; answer how many events went."""
    d, o = t.deliveries, t.outbox
    conn.execute(d.delete().where(d.c.status == COMPLETED, d.c.updated_at < cutoff))
    result = conn.execute(
        o.delete().where(
            o.c.dispatched == sa.true(),
            o.c.created_at < cutoff,
            ~sa.exists().where(d.c.event_id == o.c.id),
        )
    )
    return int(result.rowcount)
