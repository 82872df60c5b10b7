"""Whether a column holds what a reader needs, by kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from contracts.common import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["KINDS", "check_columns", "fits"]

KINDS = (
    "entity",
    "timestamp",
    "int",
    "float",
    "bool",
    "string",
    "float_vector",
    "number",
    "scalar",
    "any",
)
"""``entity``: int or string join keys; ``timestamp``: times, ISO 8601 text or epoch seconds;
``number``: integers, floats, decimals or booleans; ``scalar``: numbers or text; ``any``: any
type; the others as a feature's dtype."""

_WANTED = {
    "entity": "int or string join keys",
    "timestamp": "timestamps, ISO 8601 text or epoch seconds",
    "float_vector": "lists of numbers",
    "number": "numbers",
    "scalar": "numbers or text",
}


def fits(kind: str, t: pa.DataType) -> bool:
    """Whether a column of arrow type ``t`` can hold values of ``kind`` (nulls fit any kind but
    join keys and times)."""
    import pyarrow as pa

    types = pa.types
    if kind == "any":
        return True
    if types.is_null(t):
        return kind not in ("timestamp", "entity")
    checks: dict[str, Callable[[], bool]] = {
        "entity": lambda: types.is_integer(t) or types.is_string(t) or types.is_large_string(t),
        "timestamp": lambda: (
            types.is_timestamp(t)
            or types.is_date(t)
            or types.is_string(t)
            or types.is_large_string(t)
            or types.is_integer(t)
            or types.is_floating(t)
        ),
        "int": lambda: types.is_integer(t),
        "float": lambda: types.is_integer(t) or types.is_floating(t) or types.is_decimal(t),
        "number": lambda: (
            types.is_integer(t)
            or types.is_floating(t)
            or types.is_decimal(t)
            or types.is_boolean(t)
        ),
        "scalar": lambda: _scalar(t),
        "bool": lambda: types.is_boolean(t),
        "string": lambda: types.is_string(t) or types.is_large_string(t),
        "float_vector": lambda: (
            (types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t))
            and (types.is_integer(t.value_type) or types.is_floating(t.value_type))
        ),
    }
    return bool(checks[kind]())


def _scalar(t: pa.DataType) -> bool:
    return fits("number", t) or fits("string", t)


def check_columns(schema: pa.Schema, where: str, dtypes: Mapping[str, str]) -> None:
    """Every column of ``dtypes`` (column -> kind) is in ``schema`` with a type that can hold
    its values; ``InvalidInput`` naming ``where`` and the column otherwise."""
    for column, kind in dtypes.items():
        index = schema.get_field_index(column)
        if index < 0:
            raise InvalidInput(
                f"{where}: column {column!r} is missing (columns: {', '.join(schema.names)})",
                details={"column": column},
            )
        found = schema.field(index).type
        if not fits(kind, found):
            wanted = _WANTED.get(kind, f"{kind} values")
            raise InvalidInput(
                f"{where}: column {column!r} holds {found}, not {wanted}",
                details={"column": column},
            )
