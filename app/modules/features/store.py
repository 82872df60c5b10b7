"""The features module's tables (its own MetaData, every name prefixed ``features_``).

Every query is a small function taking a :class:`~sqlalchemy.engine.Connection`; the caller owns
the transaction. Rows become contract Structs here. Entity keys and microsecond timestamps are
those of :mod:`app.modules.features.keys`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from contracts.features import FeatureService, FeatureView, TransformState, Value

__all__ = [
    "count_offline",
    "get_service",
    "get_state",
    "get_view",
    "insert_service",
    "insert_state",
    "insert_view",
    "latest_service",
    "latest_state",
    "latest_view",
    "materializations",
    "metadata",
    "offline_rows",
    "offline_stats",
    "online_rows",
    "page_services",
    "page_views",
    "services",
    "transform_states",
    "upsert",
    "views",
    "watermarks",
    "write_offline",
]

metadata = sa.MetaData()


class Values(sa.types.TypeDecorator[Any]):
    """Feature values as JSON, encoded by msgspec (the standard library's encoder took about
    40 % of an offline write of 10,000 rows); read back as ``sa.JSON`` reads."""

    impl = sa.JSON
    cache_ok = True

    def bind_processor(self, dialect: sa.Dialect) -> Any:
        encode = msgspec.json.Encoder().encode

        def process(value: Any) -> str | None:
            return None if value is None else encode(value).decode()

        return process


views = sa.Table(
    "features_views",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

services = sa.Table(
    "features_services",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

transform_states = sa.Table(
    "features_transform_states",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("service", sa.String(128), nullable=False),
    sa.Column("service_version", sa.Integer, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

offline_rows = sa.Table(
    "features_rows",
    metadata,
    sa.Column("view", sa.String(128), primary_key=True),
    sa.Column("entity_key", sa.Text, primary_key=True),
    sa.Column("event_ts", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("values", Values, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""The offline store: every pushed row. Its primary key serves the point-in-time lookups.

``event_ts`` is microseconds since the epoch (UTC); ``values`` maps feature name -> value.
(``values`` is read as ``table.c["values"]``: ``table.c.values`` is a method.)
"""

online_rows = sa.Table(
    "features_online",
    metadata,
    sa.Column("view", sa.String(128), primary_key=True),
    sa.Column("entity_key", sa.Text, primary_key=True),
    sa.Column("event_ts", sa.BigInteger, nullable=False),
    sa.Column("values", Values, nullable=False),
)
"""The embedded online store: the newest row of each view and entity."""

materializations = sa.Table(
    "features_materializations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("view", sa.String(128), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start_ts", sa.BigInteger, nullable=True),
    sa.Column("end_ts", sa.BigInteger, nullable=True),
    sa.Column("chunk_rows", sa.Integer, nullable=False),
    sa.Column("rows_total", sa.BigInteger, nullable=True),
    sa.Column("rows_done", sa.BigInteger, nullable=False),
    sa.Column("rows_written", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("watermark_ts", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
)
"""Materialization runs of views with a source (times in microseconds, like ``event_ts``)."""

watermarks = sa.Table(
    "features_watermarks",
    metadata,
    sa.Column("view", sa.String(128), primary_key=True),
    sa.Column("watermark_ts", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
"""Per view: every source row with an event at or before ``watermark_ts`` is stored."""

S = TypeVar("S", FeatureView, FeatureService)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value  # SQLite keeps no zone


def _struct(kind: type[S], row: Any) -> S:
    found = msgspec.convert(row.spec, kind)
    return msgspec.structs.replace(found, created_at=_utc(row.created_at))


def _spec(struct: msgspec.Struct) -> Any:
    return msgspec.to_builtins(msgspec.structs.replace(struct, created_at=None))


def upsert(conn: Connection, table: sa.Table) -> Any:
    """An ``INSERT`` into ``table`` that can take ``ON CONFLICT`` on this connection's dialect."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


# --- versioned specs (views and services) ----------------------------------------------------


def _latest(conn: Connection, table: sa.Table, kind: type[S], name: str) -> S | None:
    query = sa.select(table).where(table.c.name == name).order_by(table.c.version.desc()).limit(1)
    row = conn.execute(query).first()
    return None if row is None else _struct(kind, row)


def _get(conn: Connection, table: sa.Table, kind: type[S], name: str, version: int) -> S | None:
    query = sa.select(table).where(table.c.name == name, table.c.version == version)
    row = conn.execute(query).first()
    return None if row is None else _struct(kind, row)


def _insert(conn: Connection, table: sa.Table, struct: FeatureView | FeatureService) -> None:
    created_at = struct.created_at or datetime.now(UTC)
    conn.execute(
        sa.insert(table).values(
            name=struct.name, version=struct.version, spec=_spec(struct), created_at=created_at
        )
    )


def _page(
    conn: Connection, table: sa.Table, kind: type[S], limit: int, cursor: str | None
) -> tuple[list[S], str | None]:
    newest = sa.select(table.c.name, sa.func.max(table.c.version).label("version")).group_by(
        table.c.name
    )
    if cursor is not None:
        newest = newest.where(table.c.name > cursor)
    latest = newest.subquery()
    query = (
        sa.select(table)
        .join(latest, sa.and_(table.c.name == latest.c.name, table.c.version == latest.c.version))
        .order_by(table.c.name)
        .limit(limit + 1)
    )
    found = [_struct(kind, row) for row in conn.execute(query)]
    if len(found) > limit:
        found = found[:limit]
        return found, found[-1].name if found else None
    return found, None


def latest_view(conn: Connection, name: str) -> FeatureView | None:
    """The newest version of the view ``name``, or ``None``."""
    return _latest(conn, views, FeatureView, name)


def get_view(conn: Connection, name: str, version: int) -> FeatureView | None:
    """Version ``version`` of the view ``name``, or ``None``."""
    return _get(conn, views, FeatureView, name, version)


def insert_view(conn: Connection, view: FeatureView) -> None:
    """Store a new view version (``created_at`` defaults to now); the version must be new."""
    _insert(conn, views, view)


def page_views(
    conn: Connection, limit: int, cursor: str | None
) -> tuple[list[FeatureView], str | None]:
    """Up to ``limit`` views (newest versions) by name after ``cursor``, and the next cursor."""
    return _page(conn, views, FeatureView, limit, cursor)


def latest_service(conn: Connection, name: str) -> FeatureService | None:
    """The newest version of the feature service ``name``, or ``None``."""
    return _latest(conn, services, FeatureService, name)


def get_service(conn: Connection, name: str, version: int) -> FeatureService | None:
    """Version ``version`` of the feature service ``name``, or ``None``."""
    return _get(conn, services, FeatureService, name, version)


def insert_service(conn: Connection, service: FeatureService) -> None:
    """Store a new feature service version (``created_at`` defaults to now)."""
    _insert(conn, services, service)


def page_services(
    conn: Connection, limit: int, cursor: str | None
) -> tuple[list[FeatureService], str | None]:
    """Up to ``limit`` services (newest versions) by name after ``cursor``, and the next cursor."""
    return _page(conn, services, FeatureService, limit, cursor)


# --- transform states ------------------------------------------------------------------------


def insert_state(conn: Connection, state: TransformState) -> None:
    """Store an (immutable) transform state (``created_at`` defaults to now)."""
    conn.execute(
        sa.insert(transform_states).values(
            id=state.id,
            service=state.service,
            service_version=state.service_version,
            spec=_spec(state),
            created_at=state.created_at or datetime.now(UTC),
        )
    )


def get_state(conn: Connection, state_id: str) -> TransformState | None:
    """The transform state ``state_id``, or ``None``."""
    query = sa.select(transform_states).where(transform_states.c.id == state_id)
    row = conn.execute(query).first()
    if row is None:
        return None
    state = msgspec.convert(row.spec, TransformState)
    return msgspec.structs.replace(state, created_at=_utc(row.created_at))


def latest_state(conn: Connection, service: str, version: int) -> TransformState | None:
    """The most recently fitted transform state of ``service`` version ``version``, or ``None``."""
    query = (
        sa.select(transform_states.c.id)
        .where(transform_states.c.service == service)
        .where(transform_states.c.service_version == version)
        .order_by(transform_states.c.created_at.desc())
        .limit(1)
    )
    state_id = conn.execute(query).scalar()
    return None if state_id is None else get_state(conn, state_id)


# --- the offline store -----------------------------------------------------------------------


def write_offline(
    conn: Connection, view: str, rows: Sequence[tuple[str, int, dict[str, Value]]]
) -> None:
    """Upsert ``(entity_key, event_ts, values)`` rows of ``view``.

    A row with the key and timestamp of a stored one replaces it: re-pushing changes nothing, a
    new value at the same timestamp wins. Within ``rows`` the last of such duplicates wins.
    """
    if not rows:
        return
    now = datetime.now(UTC)
    unique = {(key, ts): values for key, ts, values in rows}
    params = [
        {"view": view, "entity_key": key, "event_ts": ts, "values": values, "created_at": now}
        for (key, ts), values in unique.items()
    ]
    insert = upsert(conn, offline_rows)
    statement = insert.on_conflict_do_update(
        index_elements=["view", "entity_key", "event_ts"],
        set_={"values": insert.excluded["values"]},
    )
    conn.execute(statement, params)


def count_offline(conn: Connection, view: str) -> int:
    """How many rows the offline store holds for ``view``."""
    query = sa.select(sa.func.count()).select_from(offline_rows).where(offline_rows.c.view == view)
    return int(conn.execute(query).scalar_one())


def offline_stats(conn: Connection, view: str) -> tuple[int, int | None]:
    """How many rows the offline store holds for ``view`` and the newest ``event_ts`` (or
    ``None``): one aggregate over the primary key's ``view`` prefix."""
    query = sa.select(sa.func.count(), sa.func.max(offline_rows.c.event_ts)).where(
        offline_rows.c.view == view
    )
    count, newest = conn.execute(query).one()
    return int(count), None if newest is None else int(newest)
