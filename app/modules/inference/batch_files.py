"""Batch jobs on files and tables: a job's rows read where they live, its results written to
a Parquet file.

The rows are read at run time, in chunks of ``chunk_rows``, through the kernel's source
readers (the same roots and database allow-list as feature views): files in path order, each
in chunks of its own (its last one shorter), a table or query ordered by the job's ``keys``.
Chunking is deterministic, so a resumed job skips the chunks before ``rows_done`` and reads the
rest as the first attempt did.

An output file is written in parts: each chunk's results go to
``.<name>.<job id>.parts/<offset>.parquet`` beside the file (written under a temporary name,
then renamed), before the chunk is claimed; a chunk redone after a crash rewrites its own part,
so no row is ever written twice. When the last chunk is claimed the parts are joined into a
temporary file renamed onto the output in one step, then removed; a failed job removes them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from app.kernel.sources import Chunk, DatabaseReader, FileReader, SourcePolicy, SourceReader
from contracts.common import Conflict, InvalidInput, Tensor
from contracts.inference import BatchOutput, BatchSource, Predict, Prediction

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FileJob",
    "FileStamp",
    "OutputFile",
    "check_output",
    "check_stamps",
    "open_rows",
    "predict_request",
    "results",
    "stamps",
]

ROW = "row"
"""The column of an output without ``keys``: each row's number in the job's input."""
LABEL = "label"
"""The column of the predicted class, for a version with class labels."""
MARK = b"quarry.batch_output"
"""The Parquet metadata key of a batch job's output (its value: the job's id)."""
_SUFFIXES = (".parquet", ".pq")


class FileStamp(msgspec.Struct, frozen=True, array_like=True):
    """A source file as the job found it at submission: its path, size and change time."""

    path: str
    size: int
    mtime_ns: int


class FileJob(msgspec.Struct, frozen=True, kw_only=True):
    """What a job reads and writes, stored with it; ``files``: its source files' stamps."""

    source: BatchSource | None = None
    output: BatchOutput | None = None
    files: list[FileStamp] = []


def stamps(reader: SourceReader) -> list[FileStamp]:
    """The stamps of a file reader's files (none for a database)."""
    if not isinstance(reader, FileReader):
        return []
    found = []
    for path in reader.files:
        info = path.stat()
        found.append(FileStamp(path=str(path), size=info.st_size, mtime_ns=info.st_mtime_ns))
    return found


def check_stamps(reader: SourceReader, files: list[FileStamp]) -> None:
    """``InvalidInput`` when the source's files are no longer those the job was submitted
    for: a resumed job would read other rows than those it skips."""
    if files and stamps(reader) != files:
        raise InvalidInput(
            "the source's files changed since the job was submitted (added, removed or"
            " rewritten): submit it again",
            details={"field": "source"},
        )


def columns(source: BatchSource) -> dict[str, str]:
    """Each column a job reads and its kind; ``InvalidInput`` for a declaration that cannot
    work (neither or both of ``inputs`` and ``entities``, an input without columns)."""
    if bool(source.inputs) == bool(source.entities):
        raise InvalidInput(
            "a batch source maps columns to the model's inputs or names its entity keys"
            " (one of inputs or entities)",
            details={"field": "source"},
        )
    for name, names in source.inputs.items():
        if not names:
            raise InvalidInput(
                f"source.inputs[{name!r}] names no columns", details={"field": "source.inputs"}
            )
    found = dict.fromkeys(source.keys, "any")
    for key in source.entities:
        found[source.source.entities.get(key, key)] = "entity"
    for names in source.inputs.values():
        found.update(dict.fromkeys(names, "scalar"))
    return found


def open_rows(source: BatchSource, policy: SourcePolicy) -> SourceReader:
    """A reader of the columns ``source`` reads; ``InvalidInput`` when it may not or cannot
    be read (blocking)."""
    found = columns(source)
    where = source.source
    if where.format == "postgresql":
        if where.path is not None or where.database is None:
            raise InvalidInput(
                "a postgresql source names a database (and a table or a query), not a path",
                details={"field": "source.source.database"},
            )
        if not source.keys:
            raise InvalidInput(
                "a batch job reading a postgresql table or query needs keys: its rows are read"
                " in their order, so that a resumed job reads them as the first attempt did",
                details={"field": "source.keys"},
            )
        url = policy.database(where.database, field="source.source.database")
        return DatabaseReader(
            url,
            database=where.database,
            table=where.table,
            query=where.query,
            dtypes=found,
            order=source.keys,
        )
    if where.path is None or where.database or where.table or where.query:
        raise InvalidInput(
            f"a {where.format} source names a path (no database, table or query)",
            details={"field": "source.source.path"},
        )
    return FileReader(where.path, where.format, policy, found, field="source.source.path")


def check_output(output: BatchOutput, policy: SourcePolicy, reader: SourceReader | None) -> Path:
    """The output file's resolved path; ``InvalidInput`` for one that may not or cannot be
    written, ``Conflict`` for an existing file, unless it is an earlier batch output and
    ``overwrite`` is set (blocking)."""
    path = policy.path(output.path, field="output.path")
    if path.suffix.lower() not in _SUFFIXES:
        raise InvalidInput(
            f"output {output.path!r} is not a .parquet file", details={"field": "output.path"}
        )
    try:
        if not path.parent.is_dir():
            raise InvalidInput(
                f"output {output.path!r}: its directory does not exist",
                details={"field": "output.path"},
            )
        if path.is_dir():
            raise InvalidInput(
                f"output {output.path!r} is a directory", details={"field": "output.path"}
            )
        exists = path.exists()
    except OSError as exc:
        raise InvalidInput(
            f"output {output.path!r} is not a usable path: {type(exc).__name__}",
            details={"field": "output.path"},
        ) from None
    if isinstance(reader, FileReader) and path in reader.files:
        raise InvalidInput(
            f"output {output.path!r} is one of the job's input files",
            details={"field": "output.path"},
        )
    if exists and not output.overwrite:
        raise Conflict(
            f"output {output.path!r} exists; set overwrite to replace an earlier batch output",
            details={"field": "output.path"},
        )
    if exists and not is_output(path):
        raise Conflict(
            f"output {output.path!r} exists and is not a batch job's output: it is never"
            " replaced (choose another name)",
            details={"field": "output.path"},
        )
    return path


def is_output(path: Path) -> bool:
    """Whether the Parquet file at ``path`` was written by a batch job (its metadata carries
    :data:`MARK`), so that a job may replace it; no other file under the roots (a source, say)
    is ever overwritten."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError):
        return False
    return MARK in metadata


# --- a chunk's rows to a prediction and back ------------------------------------------------


def span(chunk: Chunk) -> str:
    """How errors name a chunk: its file or table and its rows there."""
    last = chunk.first + max(chunk.table.num_rows, 1) - 1
    return f"{chunk.where}, rows {chunk.first}-{last}"


def predict_request(model: str, chunk: Chunk, source: BatchSource) -> Predict:
    """The prediction of a chunk's rows; ``InvalidInput`` naming the rows and the column for a
    value that cannot go in (a missing one, text among numbers)."""
    table = chunk.table
    if source.entities:
        entities = {}
        for key in source.entities:
            column = source.source.entities.get(key, key)
            entities[key] = _values(table.column(column), chunk, column)
        return Predict(model=model, entities=entities)
    inputs = {
        name: Tensor.from_numpy(_stacked(table, names, chunk))
        for name, names in source.inputs.items()
    }
    return Predict(model=model, inputs=inputs, coerce=True)


def _values(column: Any, chunk: Chunk, name: str) -> list[Any]:
    import pyarrow as pa

    if column.null_count:
        raise _bad(chunk, name, f"{column.null_count} rows have no value")
    if pa.types.is_integer(column.type):
        column = column.cast(pa.int64())
    values: list[Any] = column.to_pylist()
    return values


def _stacked(table: pa.Table, names: list[str], chunk: Chunk) -> np.ndarray[Any, Any]:
    """The columns side by side, ``[rows, len(names)]``: numbers (booleans as 0/1 when mixed
    with numbers) or text, never both."""
    import pyarrow as pa

    arrays = []
    text = None
    for name in names:
        column = table.column(name).combine_chunks()
        if column.null_count:
            raise _bad(chunk, name, f"{column.null_count} rows have no value")
        is_text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if text is not None and is_text != text:
            raise _bad(chunk, name, "text and numbers cannot make one input")
        text = is_text
        if pa.types.is_decimal(column.type):
            column = column.cast(pa.float64())
        arrays.append(column.to_numpy(zero_copy_only=False))
    stacked: np.ndarray[Any, Any] = np.column_stack(arrays)
    return stacked


def _bad(chunk: Chunk, column: str, what: str) -> InvalidInput:
    return InvalidInput(f"{span(chunk)}, column {column!r}: {what}", details={"column": column})


def results(
    where: str, offset: int, rows: int, keys: dict[str, Any], prediction: Prediction
) -> pa.Table:
    """Rows ``offset`` on of the output file: their ``keys`` columns (or row numbers), then
    the outputs, then the labels; ``InvalidInput`` naming ``where`` for an output of higher
    rank or a name taken twice."""
    import pyarrow as pa

    found: dict[str, Any] = dict(keys)
    if not keys:
        found[ROW] = pa.array(np.arange(offset, offset + rows, dtype=np.int64))
    for name, tensor in prediction.outputs.items():
        array = tensor.to_numpy()
        if array.ndim == 1:
            _put(found, name, array, where)
        elif array.ndim == 2:
            for j in range(array.shape[1]):
                _put(found, f"{name}_{j}", np.ascontiguousarray(array[:, j]), where)
        else:
            raise InvalidInput(
                f"{where}: output {name!r} has shape {list(array.shape)}; an output file"
                " takes outputs of one value or one vector per row",
                details={"output": name},
            )
    if prediction.labels:
        _put(found, LABEL, np.asarray(prediction.labels, dtype=object), where)
    return pa.table(found)


def _put(found: dict[str, Any], name: str, array: np.ndarray[Any, Any], where: str) -> None:
    import pyarrow as pa

    if name in found:
        raise InvalidInput(
            f"{where}: the output file would have two columns {name!r} (a key and an"
            " output); rename the key column",
            details={"column": name},
        )
    found[name] = pa.array(_text(array.tolist()) if array.dtype == object else array)


def _text(values: list[Any]) -> list[Any]:
    """``BYTES`` values as text when they are UTF-8 (as JSON answers show them), else bytes."""
    try:
        return [v.decode() if isinstance(v, bytes) else v for v in values]
    except UnicodeDecodeError:
        return values


# --- the output file ------------------------------------------------------------------------


class OutputFile:
    """A job's output file and its parts (blocking)."""

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self._job_id = job_id
        self.parts = path.parent / f".{path.name}.{job_id}.parts"
        self._joined = path.parent / f".{path.name}.{job_id}.tmp"

    def write(self, offset: int, table: pa.Table) -> None:
        """The results of the chunk at ``offset``, replacing any earlier attempt's."""
        import pyarrow.parquet as pq

        self.parts.mkdir(exist_ok=True)
        part = self.parts / f"{offset:015d}.parquet"
        temporary = part.with_suffix(".tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, part)

    def publish(self) -> None:
        """Join the parts, in row order, into the output file (one rename), then drop them.
        Parts already joined (a redelivery after the rename) leave the file as it is."""
        import pyarrow.parquet as pq

        if not self.parts.is_dir():
            return
        parts = sorted(self.parts.glob("*.parquet"))
        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    schema = table.schema.with_metadata({MARK: self._job_id.encode()})
                    writer = pq.ParquetWriter(self._joined, schema)
                writer.write_table(_conformed(table, writer.schema, part))
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise InvalidInput("the job has no results to write")
        if self.path.exists() and not is_output(self.path):
            self._joined.unlink(missing_ok=True)
            raise InvalidInput(
                f"{self.path.name} appeared while the job ran and is not a batch job's output:"
                " it is not replaced",
                details={"field": "output.path"},
            )
        os.replace(self._joined, self.path)
        shutil.rmtree(self.parts, ignore_errors=True)

    def discard(self) -> None:
        """Remove the parts and any half-joined file (a failed job leaves nothing)."""
        shutil.rmtree(self.parts, ignore_errors=True)
        self._joined.unlink(missing_ok=True)


def _conformed(table: pa.Table, schema: pa.Schema, part: Path) -> pa.Table:
    """A part's table in the first part's schema (a later file's key may be int32, say)."""
    import pyarrow as pa

    if table.schema.equals(schema):
        return table
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise InvalidInput(
            f"rows from {int(part.stem)}: their columns differ from the first rows' ({exc})"
        ) from None


def chunk_iterator(reader: SourceReader, size: int) -> Iterator[Chunk]:
    """The reader's chunks of ``size`` rows, over the whole source."""
    return iter(reader.chunks(None, 0, size))
