"""Parquet or CSV files under the source roots, read in chunks with pyarrow."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from app.kernel.sources._columns import check_columns
from app.kernel.sources._policy import Chunk, SourcePolicy, import_arrow, unusable
from contracts.common import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FileReader"]

_SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv",)}


class FileReader:
    """One file, or every file of the format under a directory (sorted by path), read for the
    columns of ``dtypes`` (column -> kind, see :data:`KINDS`), or every column."""

    def __init__(
        self,
        path: str,
        format: Literal["parquet", "csv"],
        policy: SourcePolicy,
        dtypes: Mapping[str, str],
        *,
        every_column: bool = False,
        field: str = "source.path",
    ) -> None:
        self._arrow = import_arrow()
        self._text, self._format, self._field = path, format, field
        self._policy = policy
        self._dtypes = dict(dtypes)
        self._every = every_column
        try:
            self.files = self._files(policy.path(path, field=field))
        except OSError as exc:
            raise unusable(path, exc, field) from None

    def _files(self, path: Path) -> list[Path]:
        if not path.exists():
            raise InvalidInput(
                f"source path {self._text!r} does not exist", details={"field": self._field}
            )
        if path.is_file():
            return [path]
        suffixes = _SUFFIXES[self._format]
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
        files = [self._policy.path(str(p), field=self._field) for p in found]  # links may leave
        files = [p for p in files if p.is_file()]
        if not files:
            raise InvalidInput(
                f"source directory {self._text!r} holds no {self._format} files",
                details={"field": self._field},
            )
        return files

    def check(self) -> None:
        """Every file has the columns read, of usable types (its schema only)."""
        for path in self.files:
            check_columns(self._schema(path), self._policy.shown(path), self._dtypes)

    def _schema(self, path: Path) -> pa.Schema:
        try:
            if self._format == "parquet":
                import pyarrow.parquet as pq

                schema: pa.Schema = pq.read_schema(path)
                return schema
            with self._csv(path, 0) as reader:
                return reader.schema
        except self._arrow.ArrowException as exc:
            raise InvalidInput(
                f"{self._policy.shown(path)}: not readable: {exc}", details={"field": self._field}
            ) from None

    def _csv(self, path: Path, size: int) -> Any:
        from pyarrow import csv

        return csv.open_csv(
            path,
            read_options=csv.ReadOptions(block_size=min(max(1 << 20, size * 64), 1 << 28)),
            convert_options=csv.ConvertOptions(column_types=self._csv_types()),
        )

    def _csv_types(self) -> dict[str, Any]:
        pa = self._arrow
        arrow = {
            "int": pa.int64(),
            "float": pa.float64(),
            "number": pa.float64(),  # a later block may hold fractions the first did not
            "bool": pa.bool_(),
            "string": pa.string(),
        }
        return {column: arrow[kind] for column, kind in self._dtypes.items() if kind in arrow}

    def total(self, start_us: int | None = None, end_us: int = 0) -> int | None:
        """The rows of every file (a CSV file's lines but its header)."""
        if self._format == "parquet":
            import pyarrow.parquet as pq

            return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in self.files)
        return sum(max(0, _lines(p) - 1) for p in self.files)

    def chunks(self, start_us: int | None, end_us: int, size: int) -> Iterator[Chunk]:
        """Each file's rows in chunks of ``size`` (its last one shorter), files in order."""
        for path in self.files:
            yield from self._file_chunks(path, size)

    def _file_chunks(self, path: Path, size: int) -> Iterator[Chunk]:
        pa = self._arrow
        where = self._policy.shown(path)
        first = 0
        pending: list[Any] = []
        held = 0
        for batch in self._batches(path, size, where):
            pending.append(batch)
            held += batch.num_rows
            while held >= size:
                table = pa.Table.from_batches(pending).combine_chunks()
                yield Chunk(where=where, first=first, table=table.slice(0, size))
                rest = table.slice(size)
                first += size
                held = rest.num_rows
                pending = rest.to_batches() if held else []
        if held:
            yield Chunk(where=where, first=first, table=pa.Table.from_batches(pending))

    def _batches(self, path: Path, size: int, where: str) -> Iterator[Any]:
        columns = None if self._every else list(self._dtypes)
        done = 0
        try:
            if self._format == "parquet":
                import pyarrow.parquet as pq

                check_columns(pq.read_schema(path), where, self._dtypes)
                for batch in pq.ParquetFile(path).iter_batches(batch_size=size, columns=columns):
                    done += batch.num_rows
                    yield batch
                return
            with self._csv(path, size) as reader:
                check_columns(reader.schema, where, self._dtypes)
                for batch in reader:
                    done += batch.num_rows
                    yield batch if columns is None else batch.select(columns)
        except FileNotFoundError:
            raise InvalidInput(f"{where}: the file is gone") from None
        except self._arrow.ArrowException as exc:
            raise InvalidInput(f"{where}, rows from {done}: {exc}") from None

    def close(self) -> None:
        """Nothing to let go of."""


def _lines(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count
