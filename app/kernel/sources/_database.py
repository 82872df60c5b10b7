"""A PostgreSQL table or query, read through a server-side cursor in a read-only transaction."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from app.kernel.db import create_engine
from app.kernel.sources._policy import Chunk, import_arrow
from contracts.common import InvalidInput

__all__ = ["DatabaseReader"]

_TIME_TYPES = {1082, 1114, 1184}
"""PostgreSQL type oids of date, timestamp and timestamptz."""
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


class DatabaseReader:
    """Rows of ``table`` or ``query`` on the database at ``url`` (``database`` is how errors
    name it), for the columns of ``dtypes`` (or every column), ordered by ``order``.

    With a ``time_column`` (a ``timestamp``, ``timestamptz`` or ``date`` column, checked) a
    run's window ``(start, end]`` is applied in SQL.
    """

    def __init__(
        self,
        url: str,
        *,
        database: str,
        table: str | None,
        query: str | None,
        dtypes: Mapping[str, str],
        time_column: str | None = None,
        order: Sequence[str] = (),
        every_column: bool = False,
    ) -> None:
        if not url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise InvalidInput(
                "a postgresql source needs a postgresql:// database",
                details={"field": "source.database"},
            )
        if (table is None) == (query is None):
            raise InvalidInput(
                "a postgresql source needs one of table or query", details={"field": "source"}
            )
        if table is not None and not all(_IDENTIFIER.match(p) for p in table.split(".", 1)):
            raise InvalidInput(
                f"table {table!r} is not a name or schema.name", details={"field": "source.table"}
            )
        self._arrow = import_arrow()
        self._name = database
        self._dtypes = dict(dtypes)
        self._time = time_column
        self._order = list(order)
        self._every = every_column
        self._engine = create_engine(url)
        self._where = f"table {table}" if table else "the source query"
        quote = self._engine.dialect.identifier_preparer.quote
        self._quote = quote
        if table:
            self._from = ".".join(quote(part) for part in table.split("."))
        else:
            text = (query or "").strip().rstrip(";").replace("%", "%%")  # driver params
            self._from = f"({text}) AS quarry_source"

    def _connect(self) -> Any:
        try:
            conn = self._engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise InvalidInput(
                f"source database {self._name!r} does not answer: {_reason(exc)}",
                details={"field": "source.database"},
            ) from None
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        return conn

    def check(self) -> None:
        """The columns read are there; the time column holds times."""
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
        if self._time is not None and types[self._time] not in _TIME_TYPES:
            raise InvalidInput(
                f"{self._where}: column {self._time!r} is not a timestamp or date column",
                details={"column": self._time},
            )

    def _select(self, what: str, start_us: int | None, end_us: int) -> tuple[str, dict[str, Any]]:
        if self._time is None:
            return f"SELECT {what} FROM {self._from}", {}
        time = self._quote(self._time)
        params: dict[str, Any] = {"end": _moment(end_us)}
        where = f"{time} <= %(end)s"
        if start_us is not None:
            where += f" AND {time} > %(start)s"
            params["start"] = _moment(start_us)
        return f"SELECT {what} FROM {self._from} WHERE {where}", params

    def total(self, start_us: int | None = None, end_us: int = 0) -> int | None:
        """The rows a run reads."""
        sql, params = self._select("count(*)", start_us, end_us)
        with self._connect() as conn:
            try:
                return int(conn.exec_driver_sql(sql, params).scalar_one())
            except sa.exc.SQLAlchemyError as exc:
                raise InvalidInput(f"{self._where} cannot be read: {_reason(exc)}") from None

    def chunks(self, start_us: int | None, end_us: int, size: int) -> Iterator[Chunk]:
        """The rows in order, ``size`` at a time."""
        what = "*" if self._every else ", ".join(self._quote(c) for c in self._dtypes)
        sql, params = self._select(what, start_us, end_us)
        if self._order:
            sql += " ORDER BY " + ", ".join(self._quote(c) for c in self._order)
        first = 0
        with self._connect() as conn:
            streaming = conn.execution_options(stream_results=True, max_row_buffer=size)
            try:
                result = streaming.exec_driver_sql(sql, params)
                try:  # a reader stopped early closes its server-side cursor too
                    names = list(result.keys())
                    for rows in result.partitions(size):
                        table = self._table(names, rows)
                        yield Chunk(where=self._where, first=first, table=table)
                        first += len(rows)
                finally:
                    result.close()
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
        """Close the engine's connections."""
        self._engine.dispose()


def _moment(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC).replace(
        microsecond=micros % 1_000_000
    )


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    origin = getattr(exc, "orig", None) or exc
    return str(origin).strip().splitlines()[0] if str(origin).strip() else type(origin).__name__
