"""Batch jobs on files and tables: a job's rows read where they live (its output file is
:mod:`.batch_output`'s).

The rows are read at run time, in chunks of ``chunk_rows``, through the kernel's source
readers (the same roots and database allow-list as feature views): files in path order, each
in chunks of its own (its last one shorter), a table or query ordered by the job's ``keys``.
Chunking is deterministic, so a resumed job skips the chunks before ``rows_done`` and reads the
rest as the first attempt did; the files' sizes and change times, kept from the submission,
tell a rewritten file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from app.kernel.sources import Chunk, DatabaseReader, FileReader, SourcePolicy, SourceReader
from app.modules.inference.batch_output import check_output
from contracts.common import InvalidInput, Tensor
from contracts.inference import BatchOutput, BatchSource, Predict, SubmitBatchJob

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FileJob",
    "FileStamp",
    "Work",
    "check_stamps",
    "check_submission",
    "open_rows",
    "predict_request",
    "source_work",
    "span",
    "stamps",
]


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


# --- the output file ------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """One chunk of a job: its rows, the prediction of them, how errors name them, and the
    key columns an output file takes from them."""

    offset: int
    rows: int
    request: Predict
    where: str
    keys: dict[str, Any] = field(default_factory=dict)


def check_submission(
    request: SubmitBatchJob, policy: SourcePolicy, max_rows: int
) -> tuple[int, list[FileStamp]]:
    """The rows of a job's source and the stamps of its files (blocking); ``InvalidInput`` for
    a source or an output that may not or cannot be read or written, naming the path or the
    column, or chunks larger than one prediction takes (``max_rows``)."""
    reader = None
    rows = 0
    found: list[FileStamp] = []
    try:
        if request.source is not None:
            reader = open_rows(request.source, policy)
            reader.check()
            found = stamps(reader)
            rows = reader.total(None, 0) or 0
            if rows == 0:
                raise InvalidInput(
                    "the batch job's source holds no rows", details={"field": "source"}
                )
            if request.chunk_rows > max_rows:
                raise InvalidInput(
                    f"chunk_rows {request.chunk_rows} exceeds the rows one prediction takes"
                    f" here ({max_rows}, QUARRY_MAX_QUEUE_ROWS)",
                    details={"chunk_rows": request.chunk_rows},
                )
        if request.output is not None:
            check_output(request.output, policy, reader)
    finally:
        if reader is not None:
            reader.close()
    return rows, found


async def source_work(
    source: BatchSource,
    policy: SourcePolicy,
    *,
    target: str,
    chunk_rows: int,
    rows_done: int,
    files: list[FileStamp],
) -> AsyncGenerator[Work]:
    """The source's chunks from ``rows_done`` on, as predictions of ``target`` (earlier chunks
    are read and skipped; reading runs in a thread)."""
    reader: SourceReader = await asyncio.to_thread(open_rows, source, policy)
    try:
        await asyncio.to_thread(check_stamps, reader, files)
        chunks: Iterator[Chunk] = iter(reader.chunks(None, 0, chunk_rows))
        offset = 0
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            rows = chunk.table.num_rows
            if offset + rows <= rows_done:
                offset += rows
                continue
            if offset < rows_done:
                raise InvalidInput(
                    f"{span(chunk)}: the source changed since the job started (its rows no"
                    f" longer split at row {rows_done})"
                )
            yield Work(
                offset=offset,
                rows=rows,
                request=predict_request(target, chunk, source),
                where=span(chunk),
                keys={key: chunk.table.column(key) for key in source.keys},
            )
            offset += rows
    finally:
        await asyncio.to_thread(reader.close)
