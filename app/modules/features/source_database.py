"""A PostgreSQL table or query as a view's source, read through a server-side cursor.

The kernel's reader (:class:`app.kernel.sources.DatabaseReader`) on a view's columns: each run
reads in a read-only transaction, ordered by event then created time, the window applied in SQL
on the event column, which must be a ``timestamp``, ``timestamptz`` or ``date`` column (checked
when the view is declared).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from app.kernel import sources
from app.modules.features.source_rows import column_dtypes
from app.modules.features.sources import Chunk
from contracts.features import Feature, FeatureSource

__all__ = ["DatabaseReader"]


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
        order = [source.event_timestamp]
        if source.created_timestamp:
            order.append(source.created_timestamp)
        self._reader = sources.DatabaseReader(
            url,
            database=source.database or "",
            table=source.table,
            query=source.query,
            dtypes=column_dtypes(entities, features, source),
            time_column=source.event_timestamp,
            order=order,
            every_column=every_column,
        )

    def check(self) -> None:
        """The columns the view reads are there; the event column holds times."""
        self._reader.check()

    def total(self, start_us: int | None, end_us: int) -> int | None:
        """The rows in the window."""
        return self._reader.total(start_us, end_us)

    def chunks(self, start_us: int | None, end_us: int, size: int) -> Iterator[Chunk]:
        """The rows in the window, ordered by event then created time."""
        return self._reader.chunks(start_us, end_us, size)

    def close(self) -> None:
        """Close the engine's connections."""
        self._reader.close()
