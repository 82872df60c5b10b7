"""The notifications module's tables and queries (sync, run inside ``Database`` transactions).

- ``notifications_webhooks``: one row per webhook, with its signing secret.
- ``notifications_deliveries``: one row per (webhook, event), unique on that pair, which is the
  deduplication: an event handed over twice becomes one delivery. A row is ``pending`` (due at
  ``next_attempt_at``), ``delivered`` or ``failed``; a sender delivering it holds a lease
  (``claimed_by``/``claimed_until``), so replicas sharing the database never send it at the same
  time, and a sender that died mid-attempt loses it when the lease lapses. On PostgreSQL the rows
  a sender takes are locked ``FOR UPDATE SKIP LOCKED``.
- ``notifications_attempts``: every attempt of every delivery, numbered from 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from contracts.notifications import Attempt, Delivery, Webhook

__all__ = [
    "DELIVERED",
    "FAILED",
    "PENDING",
    "Claimed",
    "attempts",
    "deliveries",
    "metadata",
    "webhooks",
]

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

metadata = sa.MetaData()

webhooks = sa.Table(
    "notifications_webhooks",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("secret", sa.String(256), nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

deliveries = sa.Table(
    "notifications_deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("webhook", sa.String(128), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("round_attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("claimed_by", sa.String(36), nullable=True),
    sa.Column("claimed_until", sa.Float, nullable=True),
    sa.UniqueConstraint("webhook", "event_id", name="uq_notifications_deliveries_event"),
)

attempts = sa.Table(
    "notifications_attempts",
    metadata,
    sa.Column("delivery_id", sa.String(36), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)


# --- webhooks ---------------------------------------------------------------------------------


def webhook_of(row: sa.Row[tuple[object, ...]], *, secret: str | None = None) -> Webhook:
    """The contract's view of a webhook row (the secret only when given)."""
    return Webhook(
        name=row.name,
        url=row.url,
        events=list(row.events),
        format=row.format,
        created_at=row.created_at,
        updated_at=row.updated_at,
        secret=secret,
    )


def get_webhook(conn: Connection, name: str) -> sa.Row[tuple[object, ...]] | None:
    """The row of webhook ``name``, or ``None``."""
    return conn.execute(sa.select(webhooks).where(webhooks.c.name == name)).first()


def all_webhooks(conn: Connection) -> list[sa.Row[tuple[object, ...]]]:
    """Every webhook row, by name."""
    return list(conn.execute(sa.select(webhooks).order_by(webhooks.c.name)))


def put_webhook(conn: Connection, values: dict[str, object], *, now: float) -> None:
    """Insert or replace the webhook ``values["name"]`` (keeping its creation time)."""
    name = values["name"]
    if get_webhook(conn, str(name)) is None:
        conn.execute(webhooks.insert().values(**values, created_at=now, updated_at=now))
    else:
        conn.execute(
            webhooks.update().where(webhooks.c.name == name).values(**values, updated_at=now)
        )


def list_webhooks(
    conn: Connection, *, after: str | None, limit: int
) -> list[sa.Row[tuple[object, ...]]]:
    """Up to ``limit`` webhook rows after the name ``after``, by name."""
    query = sa.select(webhooks).order_by(webhooks.c.name).limit(limit)
    if after is not None:
        query = query.where(webhooks.c.name > after)
    return list(conn.execute(query))


def delete_webhook(conn: Connection, name: str) -> None:
    """Delete webhook ``name`` with its deliveries and their attempts."""
    ids = sa.select(deliveries.c.id).where(deliveries.c.webhook == name)
    conn.execute(attempts.delete().where(attempts.c.delivery_id.in_(ids)))
    conn.execute(deliveries.delete().where(deliveries.c.webhook == name))
    conn.execute(webhooks.delete().where(webhooks.c.name == name))


# --- deliveries -------------------------------------------------------------------------------


def enqueue(conn: Connection, rows: Sequence[dict[str, object]]) -> int:
    """Insert the deliveries not there yet (same webhook and event: left alone); answer how
    many were new."""
    if not rows:
        return 0
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(deliveries).values(list(rows)).on_conflict_do_nothing()
    # counted from RETURNING: a multi-row insert's rowcount is -1 through psycopg
    return len(conn.execute(statement.returning(deliveries.c.id)).all())


@dataclass(frozen=True)
class Claimed:
    """A delivery leased for one attempt, with what it needs to be sent."""

    id: str
    webhook: str
    event_id: str
    event_type: str
    body: bytes
    attempts: int
    round_attempts: int
    url: str
    secret: str


def claim(conn: Connection, *, token: str, now: float, lease_s: float, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due pending deliveries, oldest first."""
    d, w = deliveries, webhooks
    free = sa.or_(d.c.claimed_until.is_(None), d.c.claimed_until <= now)
    ids = [
        r.id
        for r in conn.execute(
            sa.select(d.c.id)
            .where(d.c.status == PENDING, d.c.next_attempt_at <= now, free)
            .order_by(d.c.next_attempt_at, d.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ]
    if not ids:
        return []
    conn.execute(
        d.update().where(d.c.id.in_(ids)).values(claimed_by=token, claimed_until=now + lease_s)
    )
    rows = conn.execute(
        sa.select(
            d.c.id,
            d.c.webhook,
            d.c.event_id,
            d.c.event_type,
            d.c.body,
            d.c.attempts,
            d.c.round_attempts,
            w.c.url,
            w.c.secret,
        )
        .join(w, w.c.name == d.c.webhook)
        .where(d.c.id.in_(ids))
        .order_by(d.c.next_attempt_at, d.c.id)
    )
    return [
        Claimed(
            id=r.id,
            webhook=r.webhook,
            event_id=r.event_id,
            event_type=r.event_type,
            body=bytes(r.body),
            attempts=r.attempts,
            round_attempts=r.round_attempts,
            url=r.url,
            secret=r.secret,
        )
        for r in rows
    ]


def record(
    conn: Connection, claimed: Claimed, attempt: Attempt, *, token: str, retry_at: float | None
) -> None:
    """Store ``attempt`` and its outcome: delivered (no error), pending until ``retry_at``, or
    failed. Nothing is written when the lease went to another sender meanwhile."""
    d = deliveries
    status = DELIVERED if attempt.error is None else PENDING if retry_at is not None else FAILED
    values: dict[str, object] = {
        "status": status,
        "attempts": claimed.attempts + 1,
        "round_attempts": claimed.round_attempts + 1,
        "updated_at": attempt.at + attempt.duration_s,
        "claimed_by": None,
        "claimed_until": None,
    }
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    done = conn.execute(
        d.update().where(d.c.id == claimed.id, d.c.claimed_by == token).values(**values)
    )
    if done.rowcount:
        conn.execute(
            attempts.insert().values(
                delivery_id=claimed.id,
                number=attempt.number,
                at=attempt.at,
                duration_s=attempt.duration_s,
                status_code=attempt.status_code,
                error=attempt.error,
            )
        )


def release(conn: Connection, token: str) -> None:
    """Give back the rows still leased under ``token`` (they were not attempted)."""
    d = deliveries
    conn.execute(
        d.update().where(d.c.claimed_by == token).values(claimed_by=None, claimed_until=None)
    )


def next_due(conn: Connection) -> float | None:
    """When the earliest pending delivery is due (a held lease counts until it lapses)."""
    d = deliveries
    due = sa.case(
        (d.c.claimed_until > d.c.next_attempt_at, d.c.claimed_until), else_=d.c.next_attempt_at
    )
    value = conn.execute(sa.select(sa.func.min(due)).where(d.c.status == PENDING)).scalar()
    return float(value) if value is not None else None


def redeliver(conn: Connection, webhook: str, delivery_id: str, *, now: float) -> bool:
    """Make a delivery pending again, due now, with a fresh retry budget; ``False`` if unknown."""
    d = deliveries
    done = conn.execute(
        d.update()
        .where(d.c.id == delivery_id, d.c.webhook == webhook)
        .values(status=PENDING, round_attempts=0, next_attempt_at=now, updated_at=now)
    )
    return bool(done.rowcount)


def prune(conn: Connection, cutoff: float) -> int:
    """Delete deliveries delivered before ``cutoff`` (and their attempts); answer how many."""
    d = deliveries
    old = sa.select(d.c.id).where(d.c.status == DELIVERED, d.c.updated_at < cutoff)
    conn.execute(attempts.delete().where(attempts.c.delivery_id.in_(old)))
    return int(
        conn.execute(d.delete().where(d.c.status == DELIVERED, d.c.updated_at < cutoff)).rowcount
    )


def list_deliveries(
    conn: Connection,
    webhook: str,
    *,
    status: str | None,
    after: tuple[float, str] | None,
    limit: int,
) -> list[Delivery]:
    """Up to ``limit`` deliveries of ``webhook``, newest first, after the key ``after``."""
    d = deliveries
    query = sa.select(d).where(d.c.webhook == webhook)
    if status is not None:
        query = query.where(d.c.status == status)
    if after is not None:
        at, key = after
        query = query.where(
            sa.or_(d.c.created_at < at, sa.and_(d.c.created_at == at, d.c.id < key))
        )
    rows = list(conn.execute(query.order_by(d.c.created_at.desc(), d.c.id.desc()).limit(limit)))
    return _with_attempts(conn, rows)


def failed_deliveries(
    conn: Connection, *, after: tuple[float, str] | None, limit: int
) -> list[tuple[float, Delivery]]:
    """Up to ``limit`` failed deliveries of every webhook, the latest failure first, after the
    key ``after``, each with the time it failed (the key of the next page)."""
    d = deliveries
    query = sa.select(d).where(d.c.status == FAILED)
    if after is not None:
        at, key = after
        query = query.where(
            sa.or_(d.c.updated_at < at, sa.and_(d.c.updated_at == at, d.c.id < key))
        )
    rows = list(conn.execute(query.order_by(d.c.updated_at.desc(), d.c.id.desc()).limit(limit)))
    return list(zip([r.updated_at for r in rows], _with_attempts(conn, rows), strict=True))


def get_delivery(conn: Connection, webhook: str, delivery_id: str) -> Delivery | None:
    """Delivery ``delivery_id`` of ``webhook`` with its attempts, or ``None``."""
    d = deliveries
    rows = list(conn.execute(sa.select(d).where(d.c.id == delivery_id, d.c.webhook == webhook)))
    found = _with_attempts(conn, rows)
    return found[0] if found else None


def _with_attempts(conn: Connection, rows: list[sa.Row[tuple[object, ...]]]) -> list[Delivery]:
    by_delivery: dict[str, list[Attempt]] = {}
    if rows:
        a = attempts
        for r in conn.execute(
            sa.select(a)
            .where(a.c.delivery_id.in_([row.id for row in rows]))
            .order_by(a.c.delivery_id, a.c.number)
        ):
            by_delivery.setdefault(r.delivery_id, []).append(
                Attempt(
                    number=r.number,
                    at=r.at,
                    duration_s=r.duration_s,
                    status_code=r.status_code,
                    error=r.error,
                )
            )
    return [
        Delivery(
            id=row.id,
            webhook=row.webhook,
            event_id=row.event_id,
            event_type=row.event_type,
            status=row.status,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at if row.status == PENDING else None,
            attempts=by_delivery.get(row.id, []),
        )
        for row in rows
    ]
