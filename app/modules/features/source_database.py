"""A PostgreSQL table or query as a view's source, read through a server-side cursor.

Each run opens its own engine on the configured URL and reads in a read-only transaction,
ordered by event then created time; the window is applied in SQL. The event column must be a
``timestamp``, ``timestamptz`` or ``date`` column (checked when the view is declared).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app.kernel.db import create_engine
from app.modules.features.keys import from_micros
from app.modules.features.source_rows import column_dtypes
from app.modules.features.sources import Chunk, import_arrow
from contracts.common import InvalidInput
from contracts.features import Feature, FeatureSource

__all__ = ["DatabaseReader"]

_TIME_TYPES = {1082, 1114, 1184}
"""PostgreSQL type oids of date, timestamp and timestamptz."""


class DatabaseReader:
    """Rows of ``source.table`` or ``source.query`` on the database at ``url``."""

    def __init__(
        self,
        entities: Sequence[str],
        features: Sequence[Feature],
        source: FeatureSource,
        url: str,
        *,
        every_column: bool = False,
    ) -> None:
        if not url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise InvalidInput(
                "a postgresql source needs a postgresql:// database",
                details={"field": "source.database"},
            )
        self._arrow = import_arrow()
        self._source = source
        self._dtypes = column_dtypes(entities, features, source)
        self._every = every_column
        self._engine = create_engine(url)
        self._where = f"table {source.table}" if source.table else "the source query"
        quote = self._engine.dialect.identifier_preparer.quote
        self._quote = quote
        if source.table:
            self._from = ".".join(quote(part) for part in source.table.split("."))
        else:
            query = (source.query or "").strip().rstrip(";").replace("%", "%%")  # driver params
            self._from = f"({query}) AS quarry_source"

    def _connect(self) -> Any:
        try:
            conn = self._engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise InvalidInput(
                f"source database {self._source.database!r} does not answer: {_reason(exc)}",
                details={"field": "source.database"},
            ) from None
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        return conn

    def check(self) -> None:
        """The columns the view reads are there; the event column holds times."""
        with self._connect() as conn:
            try:
                probe = f"SELECT * FROM {self._from} LIMIT %(none)s"
                result = conn.exec_driver_sql(probe, {"none": 0})
            except sa.exc.SQLAlchemyError as exc:
                raise InvalidInput(f"{self._where} cannot be read: {_reason(exc)}") from None
            types = {d[0]: d[1] for d in result.cursor.description}
        for column in self._dtypes:
            if column not in types:
                raise InvalidInput(
                    f"{self._where}: column {column!r} is missing (columns: {', '.join(types)})",
                    details={"column": column},
                )
        event = self._source.event_timestamp
        if types[event] not in _TIME_TYPES:
            raise InvalidInput(
                f"{self._where}: column {event!r} is not a timestamp or date column",
                details={"column": event},
            )

    def _select(self, what: str, start_us: int | None, end_us: int) -> tuple[str, dict[str, Any]]:
        event = self._quote(self._source.event_timestamp)
        params: dict[str, Any] = {"end": _moment(end_us)}
        where = f"{event} <= %(end)s"
        if start_us is not None:
            where += f" AND {event} > %(start)s"
            params["start"] = _moment(start_us)
        return f"SELECT {what} FROM {self._from} WHERE {where}", params

    def total(self, start_us: int | None, end_us: int) -> int | None:
        sql, params = self._select("count(*)", start_us, end_us)
        with self._connect() as conn:
            return int(conn.exec_driver_sql(sql, params).scalar_one())

    def chunks(self, start_us: int | None, end_us: int, size: int) -> Iterator[Chunk]:
        columns = list(self._dtypes)
        order = [self._quote(self._source.event_timestamp)]
        if self._source.created_timestamp:
            order.append(self._quote(self._source.created_timestamp))
        what = "*" if self._every else ", ".join(self._quote(c) for c in columns)
        sql, params = self._select(what, start_us, end_us)
        sql += " ORDER BY " + ", ".join(order)
        first = 0
        with self._connect() as conn:
            streaming = conn.execution_options(stream_results=True, max_row_buffer=size)
            try:
                result = streaming.exec_driver_sql(sql, params)
                names = list(result.keys())
                for rows in result.partitions(size):
                    yield Chunk(where=self._where, first=first, table=self._table(names, rows))
                    first += len(rows)
            except sa.exc.SQLAlchemyError as exc:
                raise InvalidInput(f"{self._where}, rows from {first}: {_reason(exc)}") from None

    def _table(self, columns: list[str], rows: Sequence[Any]) -> Any:
        pa = self._arrow
        values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
        arrays = {}
        for name, column in zip(columns, values, strict=True):
            try:
                arrays[name] = pa.array(list(column))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InvalidInput(
                    f"{self._where}: column {name!r} holds mixed values: {exc}",
                    details={"column": name},
                ) from None
        return pa.table(arrays)

    def close(self) -> None:
        self._engine.dispose()


def _moment(micros: int) -> datetime:
    return from_micros(micros)


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    origin = getattr(exc, "orig", None) or exc
    return str(origin).strip().splitlines()[0] if str(origin).strip() else type(origin).__name__
