"""Alias history and rollback: every move of an alias is kept with its reason, and a rollback
moves the alias back to where it pointed before its last move.

The history works as an undo stack: a ``set`` or ``delete`` pushes the version the alias left,
a ``rollback`` pops one. So a rollback of a rollback goes one step further back (it never redoes
the move it undid), and an alias whose history holds no earlier version cannot be rolled back.
Aliases moved before the history existed have none: their first rollback is a ``Conflict``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.modules.registry import store
from app.modules.registry.lookup import found, no_alias
from contracts.common import Conflict
from contracts.registry import AliasChange

__all__ = ["page_changes", "previous_version", "record"]


def record(conn: Connection, change: AliasChange) -> None:
    """Add one change to the history, in the caller's transaction."""
    conn.execute(
        store.alias_history.insert().values(
            model=change.name,
            alias=change.alias,
            action=change.action,
            version=change.version,
            previous_version=change.previous_version,
            reason=change.reason,
            at=change.at,
        )
    )


def previous_version(conn: Connection, name: str, alias: str) -> int:
    """The version a rollback of ``alias`` goes back to; ``Conflict`` when there is none, or it
    is archived or deleted (``NotFound`` when the alias is not set and never was)."""
    table = store.alias_history.c
    rows = conn.execute(
        sa.select(table.action, table.previous_version)
        .where(table.model == name, table.alias == alias)
        .order_by(table.id)
    ).all()
    if not rows and store.get_alias(conn, name, alias) is None:
        raise no_alias(name, alias)
    left: list[int | None] = []
    for row in rows:
        if row.action == "rollback":
            if left:
                left.pop()
        else:
            left.append(row.previous_version)
    target = left[-1] if left else None
    if target is None:
        raise Conflict(
            f"{name}@{alias} has no earlier version to go back to in its history",
            details={"model": name, "alias": alias},
        )
    info = store.get_version(conn, name, target)
    if info is None or info.status == store.ARCHIVED:
        state = "deleted" if info is None else "archived"
        raise Conflict(
            f"{name}@{alias} would go back to {name}:{target}, which is {state}",
            details={"model": name, "alias": alias, "version": target},
        )
    return found(info, name, target).version


def page_changes(
    conn: Connection, name: str, alias: str, before: int | None, limit: int
) -> list[tuple[int, AliasChange]]:
    """Up to ``limit + 1`` changes older than id ``before`` (all when ``None``), newest first,
    each with its id (the cursor)."""
    table = store.alias_history.c
    query: Any = sa.select(store.alias_history).where(table.model == name, table.alias == alias)
    if before is not None:
        query = query.where(table.id < before)
    rows = conn.execute(query.order_by(table.id.desc()).limit(limit + 1)).all()
    return [(row.id, _change(row)) for row in rows]


def _change(row: Any) -> AliasChange:
    at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)
    return AliasChange(
        name=row.model,
        alias=row.alias,
        action=row.action,
        version=row.version,
        previous_version=row.previous_version,
        reason=row.reason,
        at=at,
    )


def now() -> datetime:
    """The time a change is recorded at."""
    return datetime.now(UTC)
