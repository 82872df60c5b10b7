"""A view's source: where it may be read from, what it holds, and its rows in chunks.

Files (Parquet, CSV) are read only under the configured source roots: a path is resolved
(``..`` and symlinks followed) before it is compared with them, so neither a relative trick nor
a link out of a root reaches anything else; an ``s3://`` URL only under an ``s3://`` root
(:mod:`.source_s3`). Databases are read only when configured, by name or by their exact URL.
Reading is blocking: callers run it in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from app.modules.features import source_s3
from app.modules.features.source_rows import check_columns, needed_columns
from contracts.common import InvalidInput
from contracts.features import Feature, FeatureSource, PutFeatureView

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Chunk", "SourcePolicy", "SourceReader", "check_source", "import_arrow", "open_source"]

_SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv",)}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def import_arrow() -> Any:
    """pyarrow, or an error saying how to install it."""
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - installed with the sources extra
        raise InvalidInput(
            "reading sources needs pyarrow: pip install 'quarryml[sources]'"
        ) from None
    return pyarrow


@dataclass(frozen=True)
class SourcePolicy:
    """Where sources may be read: file ``roots`` (resolved), ``databases`` (name -> URL) and
    ``buckets``, the ``s3://`` roots (as ``bucket/prefix``)."""

    roots: tuple[Path, ...]
    databases: Mapping[str, str]
    buckets: tuple[str, ...] = ()

    @classmethod
    def of(cls, roots: Sequence[str], databases: Sequence[str], data_dir: Path) -> SourcePolicy:
        """The policy of the module's settings (no local roots: the data directory alone;
        ``s3://`` roots only as given)."""
        local = [r for r in roots if not source_s3.is_s3(r)]
        buckets = tuple(
            source_s3.parse_url(r, field="source_roots") for r in roots if source_s3.is_s3(r)
        )
        folders = tuple(Path(r).expanduser().resolve() for r in local) or (data_dir.resolve(),)
        named: dict[str, str] = {}
        for entry in databases:
            name, sep, url = entry.partition("=")
            if sep and "://" not in name:  # name=URL (a URL's own "=" come after its "://")
                named[name.strip()] = named[url.strip()] = url.strip()
            else:
                named[entry] = entry
        return cls(roots=folders, databases=named, buckets=buckets)

    def path(self, text: str, *, field: str = "source.path") -> Path:
        """``text`` resolved, if it lies under a root; ``InvalidInput`` otherwise."""
        if "://" in text:
            raise InvalidInput(
                f"source path {_shown(text)!r}: only local paths under the source roots and"
                " s3:// URLs under its s3:// roots are read",
                details={"field": field},
            )
        try:
            given = Path(text).expanduser()
            found = (given if given.is_absolute() else self.roots[0] / given).resolve()
        except (ValueError, OSError, RuntimeError) as exc:  # NUL bytes, loops, too long
            raise _unusable(text, exc) from None
        if not any(found.is_relative_to(root) for root in self.roots):
            raise InvalidInput(
                f"source path {_shown(text)!r} is outside the source roots (the features module's"
                " source_roots setting, QUARRY_SOURCE_ROOTS)",
                details={"field": field},
            )
        return found

    def s3_path(self, text: str, *, field: str = "source.path") -> str:
        """The ``s3://`` URL ``text`` as ``bucket/key``, if it lies under an ``s3://`` root;
        ``InvalidInput`` otherwise."""
        path = source_s3.parse_url(text, field=field)
        if not any(source_s3.under(path, root) for root in self.buckets):
            raise InvalidInput(
                f"{_shown(text)!r} is outside the s3:// source roots (the features module's"
                " source_roots setting, QUARRY_SOURCE_ROOTS, may list s3://bucket/prefix"
                " entries; none by default)",
                details={"field": field},
            )
        return path

    def shown(self, path: Path) -> str:
        """``path`` as errors name it: relative to its root."""
        for root in self.roots:
            if path.is_relative_to(root):
                return str(path.relative_to(root))
        return path.name

    def database(self, name: str) -> str:
        """The URL of a configured database; ``InvalidInput`` for any other."""
        url = self.databases.get(name)
        if url is None:
            raise InvalidInput(
                f"source database {_redacted(name)!r} is not configured (the features module's"
                " source_databases setting, QUARRY_SOURCE_DATABASES)",
                details={"field": "source.database"},
            )
        return url


def _shown(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."


def _unusable(text: str, exc: Exception) -> InvalidInput:
    return InvalidInput(
        f"source path {_shown(text)!r} is not a usable path: {type(exc).__name__}",
        details={"field": "source.path"},
    )


def _redacted(text: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", text)


@dataclass(frozen=True)
class Chunk:
    """Rows ``first`` to ``first + table.num_rows - 1`` of ``where`` (a file, a table)."""

    where: str
    first: int
    table: pa.Table


class SourceReader(Protocol):
    """A source opened for one run (or for a check at declaration)."""

    def check(self) -> None:
        """The columns the view reads are there, of usable types; ``InvalidInput`` if not."""
        ...

    def total(self, start_us: int | None, end_us: int) -> int | None:
        """About how many rows a run will read (``None`` when unknown)."""
        ...

    def chunks(self, start_us: int | None, end_us: int, size: int) -> Iterator[Chunk]:
        """The rows in chunks of at most ``size`` (a file's may hold rows outside the window)."""
        ...

    def close(self) -> None:
        """Let go of connections."""
        ...


def check_source(view: PutFeatureView, policy: SourcePolicy) -> None:
    """Reject a source that may not be read, cannot be read, or lacks a column the view reads."""
    source = view.source
    if source is None:
        return
    needed_columns(view.entities, view.features, source)  # unknown names in the mappings
    reader = open_source(view.entities, view.features, source, policy)
    try:
        reader.check()
    finally:
        reader.close()


def open_source(
    entities: Sequence[str],
    features: Sequence[Feature],
    source: FeatureSource,
    policy: SourcePolicy,
    *,
    every_column: bool = False,
) -> SourceReader:
    """A reader of ``source``; ``InvalidInput`` when it may not be read or is not there.
    ``every_column``: chunks hold every column, not only those the view reads."""
    if source.format == "postgresql":
        from app.modules.features.source_database import DatabaseReader

        if source.path is not None or source.database is None:
            raise InvalidInput(
                "a postgresql source names a database (and a table or a query), not a path",
                details={"field": "source.database"},
            )
        if (source.table is None) == (source.query is None):
            raise InvalidInput(
                "a postgresql source needs one of table or query", details={"field": "source"}
            )
        if source.table is not None and not all(
            _IDENTIFIER.match(part) for part in source.table.split(".", 1)
        ):
            raise InvalidInput(
                f"table {source.table!r} is not a name or schema.name",
                details={"field": "source.table"},
            )
        url = policy.database(source.database)
        return DatabaseReader(entities, features, source, url, every_column=every_column)
    if source.path is None or source.database or source.table or source.query:
        raise InvalidInput(
            f"a {source.format} source names a path (no database, table or query)",
            details={"field": "source.path"},
        )
    if source_s3.is_s3(source.path):
        from app.modules.features.source_s3_reader import S3Reader

        prefix = policy.s3_path(source.path)
        arrow = import_arrow()
        return S3Reader(
            entities, features, source, prefix, arrow=arrow, chunk=Chunk, every_column=every_column
        )
    return FileReader(entities, features, source, policy, every_column=every_column)


class FileReader:
    """Parquet or CSV files: one file, or every file of the format under a directory."""

    def __init__(
        self,
        entities: Sequence[str],
        features: Sequence[Feature],
        source: FeatureSource,
        policy: SourcePolicy,
        *,
        every_column: bool = False,
    ) -> None:
        self._arrow = import_arrow()
        self._every = every_column
        self._entities, self._features, self._source = entities, features, source
        self._policy = policy
        self._columns = needed_columns(entities, features, source)
        try:
            self.files = self._files(policy.path(source.path or ""))
        except OSError as exc:
            raise _unusable(source.path or "", exc) from None

    def _files(self, path: Path) -> list[Path]:
        if not path.exists():
            raise InvalidInput(
                f"source path {self._source.path!r} does not exist",
                details={"field": "source.path"},
            )
        if path.is_file():
            return [path]
        suffixes = _SUFFIXES[self._source.format]
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
        files = [self._policy.path(str(p)) for p in found]  # a link inside may point out
        files = [p for p in files if p.is_file()]
        if not files:
            raise InvalidInput(
                f"source directory {self._source.path!r} holds no {self._source.format} files",
                details={"field": "source.path"},
            )
        return files

    def check(self) -> None:
        """Every file has the columns the view reads, of usable types (its schema only)."""
        for path in self.files:
            check_columns(self._schema(path), self._policy.shown(path), self._types())

    def _types(self) -> Mapping[str, str]:
        from app.modules.features.source_rows import column_dtypes

        return column_dtypes(self._entities, self._features, self._source)

    def _schema(self, path: Path) -> pa.Schema:
        try:
            if self._source.format == "parquet":
                import pyarrow.parquet as pq

                schema: pa.Schema = pq.read_schema(path)
                return schema
            with self._csv(path, 0) as reader:
                return reader.schema
        except self._arrow.ArrowException as exc:
            raise InvalidInput(f"{self._policy.shown(path)}: not readable: {exc}") from None

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
            "bool": pa.bool_(),
            "string": pa.string(),
        }
        return {column: arrow[dtype] for column, dtype in self._types().items() if dtype in arrow}

    def total(self, start_us: int | None, end_us: int) -> int | None:
        if self._source.format == "parquet":
            import pyarrow.parquet as pq

            return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in self.files)
        return sum(max(0, _lines(p) - 1) for p in self.files)

    def chunks(self, start_us: int | None, end_us: int, size: int) -> Iterator[Chunk]:
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
        columns = None if self._every else list(self._columns)
        done = 0
        try:
            if self._source.format == "parquet":
                import pyarrow.parquet as pq

                check_columns(pq.read_schema(path), where, self._types())
                for batch in pq.ParquetFile(path).iter_batches(batch_size=size, columns=columns):
                    done += batch.num_rows
                    yield batch
                return
            with self._csv(path, size) as reader:
                check_columns(reader.schema, where, self._types())
                for batch in reader:
                    done += batch.num_rows
                    yield batch if columns is None else batch.select(columns)
        except FileNotFoundError:
            raise InvalidInput(f"{where}: the file is gone") from None
        except self._arrow.ArrowException as exc:
            raise InvalidInput(f"{where}, rows from {done}: {exc}") from None

    def close(self) -> None:
        return None


def _lines(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count
