"""A batch job's output file: its rows, and its parts joined by one rename.

An output file is written in parts: each chunk's results go to
``.<name>.<job id>.parts/<offset>.parquet`` beside the file (written under a temporary name,
then renamed), before the chunk is claimed; a chunk redone after a crash rewrites its own part,
so no row is ever written twice. When the last chunk is claimed the parts are joined into a
temporary file renamed onto the output in one step, then removed; a failed job removes them.
The file's Parquet metadata carries :data:`MARK`: only such a file is ever replaced.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.kernel.sources import FileReader, SourcePolicy, SourceReader
from contracts.common import Conflict, InvalidInput
from contracts.inference import BatchOutput, Prediction

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["LABEL", "MARK", "ROW", "OutputFile", "check_output", "is_output", "results"]

ROW = "row"
"""The column of an output without ``keys``: each row's number in the job's input."""
LABEL = "label"
"""The column of the predicted class, for a version with class labels."""
MARK = b"quarry.batch_output"
"""The Parquet metadata key of a batch job's output (its value: the job's id)."""
_SUFFIXES = (".parquet", ".pq")


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
