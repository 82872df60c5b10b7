"""A Parquet or CSV source in an S3 bucket: one object, or every object of the format under a
prefix, streamed from the bucket with pyarrow's S3 file system (nothing is copied to disk).

:func:`.sources.open_source` opens it with the prefix it checked against the roots, pyarrow and
its ``Chunk`` type (this file does not import :mod:`.sources`, which imports it)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from app.modules.features import source_s3
from app.modules.features.source_rows import check_columns, column_dtypes, needed_columns
from contracts.common import InvalidInput
from contracts.features import Feature, FeatureSource

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["S3Reader"]

_SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv",)}
_ARROW = {"int": "int64", "float": "float64", "bool": "bool_", "string": "string"}


class S3Reader:
    """The objects under ``prefix`` (``bucket/key``, checked against the ``s3://`` roots) of
    the format of ``source``; ``chunk(where, first, table)`` makes each chunk."""

    def __init__(
        self,
        entities: Sequence[str],
        features: Sequence[Feature],
        source: FeatureSource,
        prefix: str,
        *,
        arrow: Any,
        chunk: Callable[[str, int, pa.Table], Any],
        every_column: bool = False,
    ) -> None:
        self._arrow, self._chunk = arrow, chunk
        self._format = source.format
        self._columns = None if every_column else needed_columns(entities, features, source)
        self._types: Mapping[str, str] = column_dtypes(entities, features, source)
        self._s3 = source_s3.filesystem()
        self.files = source_s3.list_files(self._s3, prefix, _SUFFIXES[source.format], source.format)

    def check(self) -> None:
        """Every object has the columns the view reads, of usable types (its schema only)."""
        for path in self.files:
            where = source_s3.S3_SCHEME + path
            try:
                with self._open(path) as opened:
                    schema = opened.schema_arrow if self._format == "parquet" else opened.schema
            except (self._arrow.ArrowException, OSError) as exc:
                raise InvalidInput(
                    f"{where}: not readable: {source_s3.reason(exc)}",
                    details={"field": "source.path"},
                ) from None
            check_columns(schema, where, self._types)

    @contextlib.contextmanager
    def _open(self, path: str, size: int = 0) -> Iterator[Any]:
        """A Parquet file or a CSV reader on the object, closed with it."""
        if self._format == "parquet":
            import pyarrow.parquet as pq

            with self._s3.open_input_file(path) as handle:
                yield pq.ParquetFile(handle)
            return
        from pyarrow import csv

        pa = self._arrow
        types = {c: getattr(pa, _ARROW[k])() for c, k in self._types.items() if k in _ARROW}
        with self._s3.open_input_stream(path) as stream:
            yield csv.open_csv(
                stream,
                read_options=csv.ReadOptions(block_size=min(max(1 << 20, size * 64), 1 << 28)),
                convert_options=csv.ConvertOptions(column_types=types),
            )

    def total(self, start_us: int | None, end_us: int) -> int | None:
        """The rows of every Parquet object (its footer); ``None`` for CSV, which would have to
        be read whole to be counted."""
        if self._format != "parquet":
            return None
        try:
            count = 0
            for path in self.files:
                with self._open(path) as parquet:
                    count += int(parquet.metadata.num_rows)
            return count
        except (self._arrow.ArrowException, OSError):
            return None  # reading the rows says what is wrong

    def chunks(self, start_us: int | None, end_us: int, size: int) -> Iterator[Any]:
        for path in self.files:
            yield from self._object_chunks(path, size)

    def _object_chunks(self, path: str, size: int) -> Iterator[Any]:
        pa = self._arrow
        where = source_s3.S3_SCHEME + path
        first, held = 0, 0
        pending: list[Any] = []
        for batch in self._batches(path, where, size):
            pending.append(batch)
            held += batch.num_rows
            while held >= size:
                table = pa.Table.from_batches(pending).combine_chunks()
                yield self._chunk(where, first, table.slice(0, size))
                rest = table.slice(size)
                first, held = first + size, rest.num_rows
                pending = rest.to_batches() if held else []
        if held:
            yield self._chunk(where, first, pa.Table.from_batches(pending))

    def _batches(self, path: str, where: str, size: int) -> Iterator[pa.RecordBatch]:
        done = 0
        try:
            with self._open(path, size) as opened:
                if self._format == "parquet":
                    check_columns(opened.schema_arrow, where, self._types)
                    batches = opened.iter_batches(batch_size=size, columns=self._columns)
                else:
                    check_columns(opened.schema, where, self._types)
                    batches = opened
                for batch in batches:
                    done += batch.num_rows
                    picked = self._format == "csv" and self._columns is not None
                    yield batch.select(self._columns) if picked else batch
        except (self._arrow.ArrowException, OSError) as exc:
            raise InvalidInput(f"{where}, rows from {done}: {source_s3.reason(exc)}") from None

    def close(self) -> None:
        return None
