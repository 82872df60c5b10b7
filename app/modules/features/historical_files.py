"""A historical retrieval written to a Parquet file instead of answered row by row.

The output is a path ending in ``.parquet`` under the source roots, or an ``s3://`` URL under an
``s3://`` root (:class:`.sources.SourcePolicy`). Chunks of rows are written as they are computed
to a temporary file (next to a local output, in the system's temporary folder for S3), which
takes the output's place only when every row is in it: the output appears whole or not at all.

A retrieval may replace an existing file only when it is an earlier output (its Parquet
metadata carries :data:`MARK`): a caller allowed to read features can write new files under
the roots, never overwrite a source or anything else there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.modules.features import source_s3
from app.modules.features.reads import Resolved
from app.modules.features.rows import event_micros
from app.modules.features.sources import SourcePolicy, import_arrow
from contracts.common import Conflict, InvalidInput
from contracts.features import EVENT_TIMESTAMP, HistoricalChunk, HistoricalFeatures, Value

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MARK", "ParquetOutput", "feature_dtypes", "write_historical"]

MARK = b"quarry.historical"
"""The Parquet metadata key of a historical output (its value: the features, comma-separated)."""

_FIELD = "output"


def feature_dtypes(resolved: Resolved) -> dict[str, str]:
    """Each ``view:feature`` column of a retrieval and its dtype."""
    return {
        str(ref): next(f.dtype for f in resolved.views[ref.view].features if f.name == ref.feature)
        for ref in resolved.refs
    }


async def write_historical(
    chunks: AsyncIterator[HistoricalChunk],
    output: str,
    policy: SourcePolicy,
    dtypes: Mapping[str, str],
) -> HistoricalFeatures:
    """Write every chunk to ``output``; answer where and how many rows."""
    target = await asyncio.to_thread(ParquetOutput, output, policy, dtypes)
    try:
        async for chunk in chunks:
            await asyncio.to_thread(target.write, chunk.rows, chunk.offset)
        await asyncio.to_thread(target.commit)
    except BaseException:
        await asyncio.to_thread(target.abandon)
        close = getattr(chunks, "aclose", None)  # let go of an entity source being read
        if close is not None:
            await close()
        raise
    return HistoricalFeatures(rows=[], output=target.where, rows_written=target.rows)


class ParquetOutput:
    """One output being written (blocking: run its methods in a thread)."""

    def __init__(self, output: str, policy: SourcePolicy, dtypes: Mapping[str, str]) -> None:
        self._arrow = import_arrow()
        self._dtypes = dict(dtypes)
        self._schema: pa.Schema | None = None
        self._writer: Any = None
        self.rows = 0
        if not output.lower().endswith(".parquet"):
            raise InvalidInput(
                f"output {output!r} must name a .parquet file", details={"field": _FIELD}
            )
        if source_s3.is_s3(output):
            self._s3_path = policy.s3_path(output, field=_FIELD)
            self._s3 = source_s3.filesystem()
            self.where = source_s3.S3_SCHEME + self._s3_path
            self._check_existing_s3()
            handle, name = tempfile.mkstemp(prefix="quarry-historical-", suffix=".parquet")
            os.close(handle)
            self._temp = Path(name)
            return
        self._path = policy.path(output, field=_FIELD)
        self.where = str(self._path)
        self._check_existing(self._path)
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(
                f"output {output!r}: its folder cannot be made: {exc.strerror}",
                details={"field": _FIELD},
            ) from None
        self._temp = self._path.with_name(f".{self._path.name}.{uuid.uuid4().hex[:12]}.tmp")

    def _check_existing(self, path: Path) -> None:
        if path.is_dir():
            raise Conflict(f"output {self.where} is a folder", details={"field": _FIELD})
        if path.exists() and not self._marked(str(path), None):
            raise Conflict(
                f"output {self.where} exists and is not a historical output: choose another name",
                details={"field": _FIELD},
            )

    def _check_existing_s3(self) -> None:
        from pyarrow import fs

        try:
            info = self._s3.get_file_info(self._s3_path)
            bucket = self._s3_path.partition("/")[0]
            if self._s3.get_file_info(bucket).type == fs.FileType.NotFound:
                raise InvalidInput(
                    f"output {self.where}: bucket {bucket!r} does not exist",
                    details={"field": _FIELD},
                )
        except OSError as exc:
            raise InvalidInput(
                f"output {self.where} cannot be reached: {source_s3.reason(exc)}",
                details={"field": _FIELD},
            ) from None
        if info.type == fs.FileType.Directory:
            raise Conflict(f"output {self.where} is a folder", details={"field": _FIELD})
        if info.type == fs.FileType.File and not self._marked(self._s3_path, self._s3):
            raise Conflict(
                f"output {self.where} exists and is not a historical output: choose another name",
                details={"field": _FIELD},
            )

    def _marked(self, path: str, filesystem: Any) -> bool:
        import pyarrow.parquet as pq

        try:
            metadata = pq.read_schema(path, filesystem=filesystem).metadata or {}
        except (self._arrow.ArrowException, OSError):
            return False
        return MARK in metadata

    def write(self, rows: Sequence[Mapping[str, Value]], offset: int) -> None:
        """Append rows (``offset``: the first one's index in the retrieval)."""
        import pyarrow.parquet as pq

        table = self._table(rows, offset)
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._temp, table.schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def _table(self, rows: Sequence[Mapping[str, Value]], offset: int) -> pa.Table:
        pa = self._arrow
        schema = self._schema
        if schema is None:
            keys = dict.fromkeys(k for row in rows for k in row if k not in self._dtypes)
            names = [*keys, *self._dtypes]
        else:
            names = schema.names
            for index, row in enumerate(rows):
                extra = [k for k in row if schema.get_field_index(k) < 0]
                if extra:
                    raise InvalidInput(
                        f"entity row {offset + index} has column {extra[0]!r}, which earlier"
                        " rows lack: a Parquet output needs the same columns in every row",
                        details={"column": extra[0]},
                    )
        arrays = []
        for name in names:
            values = [row.get(name) for row in rows]
            try:
                arrays.append(self._array(name, values, offset, schema))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InvalidInput(
                    f"entity rows {offset}-{offset + len(rows) - 1}, column {name!r}: its values"
                    f" do not fit one Parquet type ({exc})",
                    details={"column": name},
                ) from None
        table = pa.Table.from_arrays(arrays, names=names)
        if schema is None:
            features = ",".join(self._dtypes).encode()
            table = table.replace_schema_metadata({MARK: features})
        return table

    def _array(self, name: str, values: list[Value], offset: int, schema: Any) -> pa.Array:
        pa = self._arrow
        if name == EVENT_TIMESTAMP:
            micros = [
                event_micros(v, where=f"entity row {offset + i}") for i, v in enumerate(values)
            ]
            return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        if name in self._dtypes:
            return pa.array(values, type=_arrow_type(pa, self._dtypes[name]))
        if schema is not None:
            return pa.array(values, type=schema.field(name).type)
        return pa.array(values)

    def commit(self) -> None:
        """Put the written file in the output's place."""
        if self._writer is None:
            raise InvalidInput("the retrieval has no rows to write")
        self._writer.close()
        self._writer = None
        if not source_s3.is_s3(self.where):
            os.replace(self._temp, self._path)
            return
        from pyarrow import fs

        try:
            fs.copy_files(
                str(self._temp),
                self._s3_path,
                source_filesystem=fs.LocalFileSystem(),
                destination_filesystem=self._s3,
            )
        except OSError as exc:
            raise InvalidInput(
                f"output {self.where} cannot be written: {source_s3.reason(exc)}",
                details={"field": _FIELD},
            ) from None
        finally:
            self._temp.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Drop what was written (the output stays as it was)."""
        if self._writer is not None:
            with contextlib.suppress(self._arrow.ArrowException, OSError):
                self._writer.close()
            self._writer = None
        self._temp.unlink(missing_ok=True)


def _arrow_type(pa: Any, dtype: str) -> Any:
    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "float_vector": pa.list_(pa.float64()),
    }[dtype]
