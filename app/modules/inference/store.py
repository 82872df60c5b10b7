"""The inference module's tables (its own MetaData, every name prefixed ``inference_``).

Every query is a small function taking a :class:`~sqlalchemy.engine.Connection`; the caller owns
the transaction. Rows become contract Structs here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from contracts.inference import Deployment

__all__ = [
    "delete_deployment",
    "deployments",
    "get_deployment",
    "page_deployments",
    "put_deployment",
]

metadata = sa.MetaData()

deployments = sa.Table(
    "inference_deployments",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def _row(spec: Any, updated_at: datetime) -> Deployment:
    deployment = msgspec.convert(spec, Deployment)
    if updated_at.tzinfo is None:  # SQLite keeps no time zone: the column holds UTC
        updated_at = updated_at.replace(tzinfo=UTC)
    return msgspec.structs.replace(deployment, updated_at=updated_at)


def get_deployment(conn: Connection, name: str) -> Deployment | None:
    """The deployment called ``name``, or ``None``."""
    row = conn.execute(sa.select(deployments).where(deployments.c.name == name)).first()
    return None if row is None else _row(row.spec, row.updated_at)


def put_deployment(conn: Connection, deployment: Deployment, now: datetime) -> Deployment:
    """Create or replace a deployment; answers it as stored."""
    spec = msgspec.to_builtins(msgspec.structs.replace(deployment, updated_at=None))
    conn.execute(sa.delete(deployments).where(deployments.c.name == deployment.name))
    conn.execute(sa.insert(deployments).values(name=deployment.name, spec=spec, updated_at=now))
    return msgspec.structs.replace(deployment, updated_at=now)


def delete_deployment(conn: Connection, name: str) -> Deployment | None:
    """Delete a deployment; answers what was deleted, or ``None``."""
    found = get_deployment(conn, name)
    if found is not None:
        conn.execute(sa.delete(deployments).where(deployments.c.name == name))
    return found


def page_deployments(conn: Connection, *, after: str | None, limit: int) -> list[Deployment]:
    """Up to ``limit + 1`` deployments by name after ``after`` (the extra one says more follow)."""
    query = sa.select(deployments).order_by(deployments.c.name).limit(limit + 1)
    if after is not None:
        query = query.where(deployments.c.name > after)
    return [_row(r.spec, r.updated_at) for r in conn.execute(query)]
