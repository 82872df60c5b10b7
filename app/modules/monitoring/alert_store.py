"""The alert rules table (``monitoring_alerts``) and its queries.

A rule watches what its ``target`` says its ``model`` names (a model, a deployment, a feature
view). A rule's state (``ok`` / ``pending`` / ``firing``), last value and the time the state
began are kept with it. Times are epoch seconds, as in :mod:`app.modules.monitoring.store`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.modules.monitoring.store import metadata
from contracts.monitoring import Alert, PutAlert

__all__ = ["alerts", "delete_alert", "get_alert", "page_alerts", "put_alert", "set_state"]

alerts = sa.Table(
    "monitoring_alerts",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("signal", sa.String(32), nullable=False),
    sa.Column("comparison", sa.String(8), nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("window_s", sa.Float, nullable=False),
    sa.Column("for_s", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("since", sa.Float, nullable=True),
    sa.Column("evaluated_at", sa.Float, nullable=True),
    sa.Column("target", sa.String(16), nullable=False, server_default="model"),
    sa.Column("feature", sa.String(128), nullable=True),
)


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _alert(row: Any) -> Alert:
    return Alert(
        name=row.name,
        model=row.model,
        version=row.version,
        signal=row.signal,
        comparison=row.comparison,
        threshold=row.threshold,
        window_s=row.window_s,
        for_s=row.for_s,
        state=row.state,
        value=row.value,
        since=_time(row.since),
        evaluated_at=_time(row.evaluated_at),
        target=row.target,
        feature=row.feature,
    )


def put_alert(conn: Connection, rule: PutAlert, now: float) -> Alert:
    """Create or replace a rule; it starts ``ok``, not yet evaluated."""
    conn.execute(alerts.delete().where(alerts.c.name == rule.name))
    conn.execute(
        alerts.insert().values(
            name=rule.name,
            model=rule.model,
            version=rule.version,
            signal=rule.signal,
            comparison=rule.comparison,
            threshold=rule.threshold,
            window_s=rule.window_s,
            for_s=rule.for_s,
            state="ok",
            value=None,
            since=now,
            evaluated_at=None,
            target=rule.target,
            feature=rule.feature,
        )
    )
    found = get_alert(conn, rule.name)
    assert found is not None
    return found


def get_alert(conn: Connection, name: str) -> Alert | None:
    """A rule by name, or ``None``."""
    row = conn.execute(sa.select(alerts).where(alerts.c.name == name)).first()
    return None if row is None else _alert(row)


def all_alerts(conn: Connection) -> list[Alert]:
    """Every rule, by name."""
    return [_alert(r) for r in conn.execute(sa.select(alerts).order_by(alerts.c.name))]


def page_alerts(conn: Connection, limit: int, after: str | None) -> tuple[list[Alert], str | None]:
    """Up to ``limit`` rules by name after ``after``; the last name when there are more."""
    query = sa.select(alerts).order_by(alerts.c.name).limit(limit + 1)
    if after is not None:
        query = query.where(alerts.c.name > after)
    rows = conn.execute(query).all()
    items = [_alert(r) for r in rows[:limit]]
    return items, (items[-1].name if len(rows) > limit else None)


def delete_alert(conn: Connection, name: str) -> Alert | None:
    """Delete a rule; answers it (``None`` when there was none)."""
    found = get_alert(conn, name)
    if found is not None:
        conn.execute(alerts.delete().where(alerts.c.name == name))
    return found


def set_state(
    conn: Connection,
    rule: Alert,
    *,
    state: str,
    value: float | None,
    since: float | None,
    now: float,
) -> bool:
    """Record an evaluation of ``rule`` as it was read; ``False`` when the rule was replaced or
    deleted meanwhile (nothing is written)."""
    done = conn.execute(
        alerts.update()
        .where(
            alerts.c.name == rule.name,
            alerts.c.signal == rule.signal,
            alerts.c.threshold == rule.threshold,
            alerts.c.state == rule.state,
        )
        .values(state=state, value=value, since=since, evaluated_at=now)
    )
    return bool(done.rowcount)
