"""A plain table as a job's dataset: its feature and label columns, read where they live.

A dataset's ``source`` is a Parquet or CSV file (or directory) under the source roots, or a
PostgreSQL table or query of a configured database, read with the kernel's readers (the ones
feature views read through) a chunk at a time into a float matrix and a list of labels. No
feature view and no features module are involved.

Feature columns must hold numbers (integers, floats, decimals or booleans; a null is a missing
value); the label column numbers (regression) or integers, text, booleans or numbers
(classification).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from app.kernel.sources import (
    Chunk,
    DatabaseReader,
    FileReader,
    SourcePolicy,
    SourceReader,
    check_columns,
    fits,
)
from contracts.common import InvalidInput
from contracts.features import FeatureSource, Value

__all__ = ["CHUNK_ROWS", "Table", "check_table", "describe", "read_table"]

CHUNK_ROWS = 50_000
"""Rows read at a time: bounds what a chunk holds besides the arrays it fills."""
FIELD = "dataset.source"


@dataclass(frozen=True, kw_only=True)
class Table:
    """The rows of a source: ``x`` (rows x features, float32, NaN where null) and labels."""

    x: np.ndarray
    labels: list[Value]
    digest: str


def describe(source: FeatureSource) -> str:
    """The source as lineage records it: its format and where it is (no credentials)."""
    where = {
        "format": source.format,
        "path": source.path,
        "database": source.database,
        "table": source.table,
        "query": source.query,
    }
    return msgspec.json.encode({k: v for k, v in where.items() if v is not None}).decode()


def _open(source: FeatureSource, dtypes: Mapping[str, str], policy: SourcePolicy) -> SourceReader:
    if source.format == "postgresql":
        if source.path is not None or source.database is None:
            raise InvalidInput(
                "a postgresql source names a database (and a table or a query), not a path",
                details={"field": f"{FIELD}.database"},
            )
        url = policy.database(source.database, field=f"{FIELD}.database")
        return DatabaseReader(
            url, database=source.database, table=source.table, query=source.query, dtypes=dtypes
        )
    if source.path is None or source.database or source.table or source.query:
        raise InvalidInput(
            f"a {source.format} source names a path (no database, table or query)",
            details={"field": f"{FIELD}.path"},
        )
    return FileReader(source.path, source.format, policy, dtypes, field=f"{FIELD}.path")


def _dtypes(features: Sequence[str], label: str) -> dict[str, str]:
    return {**dict.fromkeys(features, "number"), label: "any"}


def _check_label(schema: Any, where: str, label: str, task: str) -> None:
    index = schema.get_field_index(label)
    if index < 0:
        return  # check_columns names it
    found = schema.field(index).type
    usable = fits("number", found) or (task == "classification" and fits("string", found))
    if not usable:
        wanted = "numbers" if task == "regression" else "numbers, text or booleans"
        raise InvalidInput(
            f"{where}: label column {label!r} holds {found}, not {wanted}",
            details={"column": label},
        )


def _check_chunk(chunk: Chunk, features: Sequence[str], label: str, task: str) -> None:
    where = f"{chunk.where}, rows {chunk.first}-{chunk.first + max(chunk.table.num_rows, 1) - 1}"
    check_columns(chunk.table.schema, where, _dtypes(features, label))
    _check_label(chunk.table.schema, where, label, task)


def check_table(
    source: FeatureSource, features: Sequence[str], label: str, task: str, policy: SourcePolicy
) -> None:
    """The source may be read and holds the columns, of usable types; ``InvalidInput`` naming
        the column otherwise. Parquet files: their schemas; CSV files and databases: their columns
    and first rows."""
    reader = _open(source, _dtypes(features, label), policy)
    try:
        reader.check()
        if isinstance(reader, FileReader) and source.format == "parquet":
            import pyarrow.parquet as pq

            for path in reader.files:
                _check_label(pq.read_schema(path), policy.shown(path), label, task)
        else:  # a CSV file's types, or a database's, show in the values read
            with contextlib.closing(reader.chunks(None, 0, 100)) as chunks:  # type: ignore[type-var]
                first = next(chunks, None)
            if first is not None:
                _check_chunk(first, features, label, task)
    finally:
        reader.close()


def read_table(
    source: FeatureSource,
    features: Sequence[str],
    label: str,
    task: str,
    policy: SourcePolicy,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Table:
    """Every row of the source: the feature columns as floats, the label column's values.

    A row without a label is refused, naming where it is; nulls in features become NaN (the
    caller refuses them with the columns' counts).
    """
    reader = _open(source, _dtypes(features, label), policy)
    blocks: list[np.ndarray] = []
    labels: list[Value] = []
    try:
        with contextlib.closing(reader.chunks(None, 0, chunk_rows)) as chunks:  # type: ignore[type-var]
            for chunk in chunks:
                block, values = _arrays(chunk, features, label, task)
                blocks.append(block)
                labels.extend(values)
    finally:
        reader.close()
    x = np.concatenate(blocks) if blocks else np.empty((0, len(features)), dtype=np.float32)
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    digest.update(msgspec.msgpack.encode(labels))
    return Table(x=x, labels=labels, digest=f"sha256:{digest.hexdigest()}")


def _arrays(
    chunk: Chunk, features: Sequence[str], label: str, task: str
) -> tuple[np.ndarray, list[Value]]:
    """A chunk's features as a float32 block (NaN where null) and its labels."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _check_chunk(chunk, features, label, task)
    table = chunk.table
    block = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        block[:, j] = pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
    target = table.column(label)
    if target.null_count:
        index = pc.index(pc.is_null(target), True).as_py()
        raise InvalidInput(
            f"{chunk.where}: {target.null_count} rows have no label {label!r}"
            f" (first: row {chunk.first + index})",
            details={"column": label},
        )
    return block, _plain(target)


def _plain(column: Any) -> list[Value]:
    """A label column's values as plain numbers, text or booleans (decimals as floats)."""
    import pyarrow as pa

    if pa.types.is_decimal(column.type):
        column = column.cast(pa.float64())
    values: list[Value] = column.to_pylist()
    return values
