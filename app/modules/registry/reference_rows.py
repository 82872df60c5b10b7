"""Rows for ``PUT .../versions/{version}/reference``: JSON, CSV or Parquet, as columns.

Every format becomes ``{column: array}`` with one entry per row: numbers (and empty cells or
``null``) as float64 with NaN for missing values, booleans as bool, text as text, and a
list-valued column (JSON lists, Parquet lists) as float64 ``[rows, k]``. Which columns feed which
model input is the service's business (:mod:`app.modules.registry.references`).
"""

from __future__ import annotations

import csv
import importlib
import io
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)

from app.kernel.http.openapi import documented
from contracts.common import InvalidInput, Seed, Tensor
from contracts.registry import VersionInfo

__all__ = [
    "Cell",
    "ReferenceMetadata",
    "ReferenceRows",
    "columns_of_csv",
    "columns_of_parquet",
    "columns_of_rows",
    "file_form",
    "read_reference_rows",
    "reference_operation",
    "tensors",
]

Array = npt.NDArray[Any]

Cell = float | str | bool | list[float] | None
"""One value of a row: a number, a text, a boolean, a list of numbers, or ``null`` (missing)."""


class ReferenceMetadata(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What may come with the rows: the version's task and classes, and the sample's seed."""

    task: Literal["classification", "regression"] | None = None
    classes: list[Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]] = []
    seed: Seed = 0


class ReferenceRows(ReferenceMetadata, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The JSON body of ``PUT .../reference``: ``rows`` of ``{column: value}``, every row with
    the same columns (the model's inputs, optionally ``label``)."""

    rows: list[dict[str, Cell]]


_REFERENCE_ROWS = msgspec.json.Decoder(ReferenceRows)
_REFERENCE_METADATA = msgspec.json.Decoder(ReferenceMetadata)
_REFERENCE_EXAMPLE = {
    "rows": [
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    ]
}


def file_form(file: str, metadata: str) -> Schema:
    """The OpenAPI schema of a multipart form: a file in ``file`` and optional JSON in
    ``metadata``."""
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["file"],
        properties={
            "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description=file),
            "metadata": Schema(type=OpenAPIType.STRING, description=metadata),
        },
    )


def reference_operation() -> dict[str, Any]:
    """Route keyword arguments documenting the JSON body and the multipart form."""
    kwargs = documented(
        body=ReferenceRows, answer=VersionInfo, body_example=_REFERENCE_EXAMPLE, errors=(404,)
    )
    documented_operation: type[Operation] = kwargs["operation_class"]

    @dataclass
    class ReferenceOperation(documented_operation):  # type: ignore[valid-type,misc]
        """The JSON body, and the same rows as a CSV or Parquet file in a multipart form."""

        def __post_init__(self) -> None:
            super().__post_init__()
            form = file_form(
                "The rows: CSV with a header line, or Parquet.",
                "Optional JSON object: task, classes, seed.",
            )
            if isinstance(self.request_body, RequestBody):
                self.request_body.content["multipart/form-data"] = OpenAPIMediaType(schema=form)

    kwargs["operation_class"] = ReferenceOperation
    return kwargs


async def read_reference_rows(
    request: Request[Any, Any, Any],
) -> tuple[dict[str, Array], ReferenceMetadata]:
    """The rows of a request as columns, and what came with them."""
    if request.content_type[0] != RequestEncodingType.MULTI_PART:
        try:
            body = _REFERENCE_ROWS.decode(await request.body())
        except msgspec.DecodeError as exc:
            raise InvalidInput(
                f'the body is not valid: {exc}; expected JSON {{"rows": [{{column: value}}]}}'
                " or a CSV or Parquet file in multipart field 'file'",
                details={"field": "rows"},
            ) from None
        meta = ReferenceMetadata(task=body.task, classes=body.classes, seed=body.seed)
        return columns_of_rows(body.rows), meta
    form = await request.form()
    uploads = [v for v in form.values() if isinstance(v, UploadFile)]
    try:
        files = form.getall("file", [])
        if len(files) != 1 or not isinstance(files[0], UploadFile):
            raise InvalidInput(
                "send the rows as one CSV or Parquet file part named 'file'",
                details={"field": "file"},
            )
        upload = files[0]
        data = await upload.read()
        metadata = form.getall("metadata", [])
        raw = metadata[0] if metadata else ""
        if isinstance(raw, UploadFile):
            raw = await raw.read()
    finally:
        for item in uploads:
            await item.close()
    try:
        meta = _REFERENCE_METADATA.decode(raw) if raw not in ("", b"") else ReferenceMetadata()
    except msgspec.DecodeError as exc:
        raise InvalidInput(
            f"field 'metadata' is not valid: {exc}", details={"field": "metadata"}
        ) from None
    parquet = data[:4] == b"PAR1" or (upload.filename or "").endswith((".parquet", ".pq"))
    return (columns_of_parquet(data) if parquet else columns_of_csv(data)), meta


def columns_of_rows(rows: list[dict[str, Cell]]) -> dict[str, Array]:
    """JSON rows as columns; every row must name the columns of the first."""
    if not rows:
        raise _empty()
    names = list(rows[0])
    for number, row in enumerate(rows):
        if len(row) != len(names) or any(name not in row for name in names):
            missing = next((n for n in names if n not in row), None)
            extra = next((n for n in row if n not in rows[0]), None)
            which = (
                f"has no column {missing!r}" if missing else f"has a column {extra!r} row 0 lacks"
            )
            raise InvalidInput(
                f"row {number} {which}; every row must have the same columns",
                details={"column": missing or extra, "row": number},
            )
    return {name: _column(name, [row[name] for row in rows]) for name in names}


def _column(name: str, values: list[Any]) -> Array:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, list) for v in present):
        if len(present) != len(values) or len({len(v) for v in present}) != 1:
            raise InvalidInput(
                f"column {name!r} holds lists of different lengths or missing values",
                details={"column": name},
            )
        return np.asarray(values, dtype=np.float64)
    if any(isinstance(v, list) for v in present):
        raise InvalidInput(
            f"column {name!r} mixes lists with single values", details={"column": name}
        )
    if present and all(isinstance(v, bool) for v in present) and len(present) == len(values):
        return np.asarray(values, dtype=bool)
    if all(isinstance(v, (int, float)) for v in present):
        return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return np.asarray(["" if v is None else str(v) for v in values], dtype=object)


def columns_of_csv(data: bytes) -> dict[str, Array]:
    """A CSV file with a header row as columns: numbers where every cell is one (empty = NaN)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the CSV file is not UTF-8 text", details={"field": "file"}) from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        body = list(reader)
    except csv.Error as exc:
        raise InvalidInput(
            f"the CSV file cannot be read: {exc}", details={"field": "file"}
        ) from None
    if not header:
        raise _empty()
    body = [row for row in body if row]
    if not body:
        raise _empty()
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InvalidInput(
                f"CSV line {number} holds {len(row)} cells, the header {len(header)}",
                details={"field": "file", "line": number},
            )
    return {name: _csv_column([row[i] for row in body]) for i, name in enumerate(header)}


def _csv_column(cells: list[str]) -> Array:
    try:
        return np.asarray([float(c) if c.strip() else np.nan for c in cells], dtype=np.float64)
    except ValueError:
        return np.asarray(cells, dtype=object)


def columns_of_parquet(data: bytes) -> dict[str, Array]:
    """A Parquet file as columns (needs pyarrow on the server)."""
    try:
        pq = importlib.import_module("pyarrow.parquet")  # optional: Any whether typed or not
    except ImportError:
        raise InvalidInput(
            "reading Parquet needs pyarrow on the server (pip install pyarrow); send CSV or"
            " JSON rows instead",
            details={"field": "file"},
        ) from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:
        message = " ".join(str(exc).split())[:300]
        raise InvalidInput(
            f"the Parquet file cannot be read: {message}", details={"field": "file"}
        ) from None
    if not table.num_rows:
        raise _empty()
    columns: dict[str, Array] = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        columns[name] = _column(name, values)
    return columns


def tensors(columns: dict[str, Array]) -> dict[str, Tensor]:
    """The columns as tensors for :class:`contracts.registry.SetReference`."""
    return {name: Tensor.from_numpy(values) for name, values in columns.items()}


def _empty() -> InvalidInput:
    return InvalidInput("the reference holds no rows", details={"field": "rows"})
