"""Point-in-time correct reads of the offline store (``features_rows``).

For an entity row ``(entity_key, ts)`` the answer is the view's row of that entity with the
greatest ``event_ts <= ts`` (never a value from the future) that is *strictly* within the TTL:
``event_ts > ts - ttl``, so a value exactly ``ttl`` old has expired (``ttl == 0``: no limit).

The entity rows are loaded, a chunk at a time, into a temporary table (PostgreSQL: ``COPY``;
SQLite: ``executemany``) and answered by one query per chunk that walks the primary key index
``(view, entity_key, event_ts)`` backwards from each row's timestamp: a ``LATERAL`` join on
PostgreSQL, a correlated ``rowid`` subquery on SQLite. The temporary table is dropped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from contracts.features import Value

if TYPE_CHECKING:
    import psycopg

__all__ = ["CHUNK_ROWS", "iter_point_in_time", "point_in_time"]

CHUNK_ROWS = 10_000
"""Entity rows per query by default: bounds the memory a retrieval holds at once."""

Found = tuple[int, dict[str, Value]] | None
"""``(event_ts, values)`` of the row found for one entity row, or ``None``."""

_decode_values = msgspec.json.Decoder(dict[str, Any])

_POSTGRES = """
SELECT f.event_ts, f."values" FROM {keys} AS k
LEFT JOIN LATERAL (
    SELECT r.event_ts, r."values" FROM features_rows AS r
    WHERE r."view" = :view AND r.entity_key = k.entity_key AND r.event_ts <= k.ts {ttl}
    ORDER BY r.event_ts DESC LIMIT 1
) AS f ON true
ORDER BY k.idx
"""

_SQLITE = """
SELECT f.event_ts, f."values" FROM {keys} AS k
LEFT JOIN features_rows AS f ON f.rowid = (
    SELECT r.rowid FROM features_rows AS r
    WHERE r."view" = :view AND r.entity_key = k.entity_key AND r.event_ts <= k.ts {ttl}
    ORDER BY r.event_ts DESC LIMIT 1
)
ORDER BY k.idx
"""

_TTL = "AND r.event_ts > k.ts - :ttl"


def point_in_time(
    conn: Connection,
    view: str,
    ttl_us: int,
    keys: Sequence[tuple[str, int]],
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> list[Found]:
    """For each ``(entity_key, ts_us)`` in order, the latest row of ``view`` at ``ts_us``.

    ``(event_ts, values)`` of the row with the greatest ``event_ts <= ts_us`` and, when
    ``ttl_us`` is not 0, ``event_ts > ts_us - ttl_us``; else ``None``.
    """
    found: list[Found] = []
    for chunk in iter_point_in_time(conn, view, ttl_us, keys, chunk_rows=chunk_rows):
        found += chunk
    return found


def iter_point_in_time(
    conn: Connection,
    view: str,
    ttl_us: int,
    keys: Sequence[tuple[str, int]],
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[list[Found]]:
    """:func:`point_in_time` a chunk of ``chunk_rows`` entity rows at a time, in order.

    Consume it inside the caller's transaction on ``conn``.
    """
    if not keys:
        return
    postgres = conn.dialect.name == "postgresql"
    table = f"features_pit_{uuid.uuid4().hex[:12]}"
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {table} (idx INTEGER PRIMARY KEY, entity_key TEXT NOT NULL, "
        f"ts BIGINT NOT NULL)" + (" ON COMMIT DROP" if postgres else "")
    )
    query = sa.text(
        (_POSTGRES if postgres else _SQLITE).format(keys=table, ttl=_TTL if ttl_us else "")
    ).bindparams(view=view, **({"ttl": ttl_us} if ttl_us else {}))
    load = _copy if postgres else _insert
    try:
        for start in range(0, len(keys), chunk_rows):
            chunk = keys[start : start + chunk_rows]
            load(conn, table, chunk)
            yield [
                None if ts is None else (ts, _values(values)) for ts, values in conn.execute(query)
            ]
            conn.exec_driver_sql(f"{'TRUNCATE' if postgres else 'DELETE FROM'} {table}")
    finally:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


def _copy(conn: Connection, table: str, keys: Sequence[tuple[str, int]]) -> None:
    # Only called on PostgreSQL, through a checked-out connection: the driver's is psycopg's.
    raw = cast("psycopg.Connection[Any]", conn.connection.driver_connection)
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY {table} (idx, entity_key, ts) FROM STDIN") as copy,
    ):
        for idx, (entity_key, ts) in enumerate(keys):
            copy.write_row((idx, entity_key, ts))


def _insert(conn: Connection, table: str, keys: Sequence[tuple[str, int]]) -> None:
    conn.exec_driver_sql(
        f"INSERT INTO {table} (idx, entity_key, ts) VALUES (?, ?, ?)",
        [(idx, entity_key, ts) for idx, (entity_key, ts) in enumerate(keys)],
    )


def _values(values: Any) -> dict[str, Value]:
    # PostgreSQL's driver decodes JSON; SQLite answers its text.
    return _decode_values.decode(values) if isinstance(values, (str, bytes)) else values
