"""Source columns to stored rows: type checks and conversion, a chunk at a time with pyarrow.

A chunk is checked whole before anything of it is written; a bad value fails it with an
``InvalidInput`` naming the file (or table), the chunk's row range and the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.kernel.sources import check_columns, fits
from app.modules.features.keys import encode_entity_key, to_micros
from contracts.common import InvalidInput
from contracts.features import Feature, FeatureSource, Value

if TYPE_CHECKING:
    import pyarrow as pa

    from app.modules.features.sources import Chunk

__all__ = ["check_columns", "column_dtypes", "needed_columns", "plain_rows", "source_rows"]

Row = tuple[str, int, dict[str, Value]]

ENTITY, TIMESTAMP = "entity", "timestamp"


def needed_columns(
    entities: Sequence[str], features: Sequence[Feature], source: FeatureSource
) -> list[str]:
    """The source columns a view reads; ``InvalidInput`` when a mapping names something the
    view does not have."""
    names = {f.name for f in features}
    for key in source.entities:
        if key not in entities:
            raise InvalidInput(
                f"source.entities maps {key!r}, which is not a join key of the view",
                details={"field": "source.entities"},
            )
    for name in source.columns:
        if name not in names:
            raise InvalidInput(
                f"source.columns maps {name!r}, which is not a feature of the view",
                details={"field": "source.columns"},
            )
    return list(column_dtypes(entities, features, source))


def column_dtypes(
    entities: Sequence[str], features: Sequence[Feature], source: FeatureSource
) -> dict[str, str]:
    """Each column read and what it holds: ``entity``, ``timestamp`` or a feature dtype."""
    found = {source.entities.get(key, key): ENTITY for key in entities}
    found[source.event_timestamp] = TIMESTAMP
    if source.created_timestamp:
        found[source.created_timestamp] = TIMESTAMP
    for feature in features:
        found.setdefault(source.columns.get(feature.name, feature.name), feature.dtype)
    return found


def source_rows(
    chunk: Chunk,
    entities: Sequence[str],
    features: Sequence[Feature],
    source: FeatureSource,
    window: tuple[int | None, int],
) -> list[Row]:
    """The chunk's rows inside ``window`` (``start < event <= end``, micros) as the stores take
    them, ordered by event then created time, so that of rows of one entity and event the later
    created one is written last (and wins)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table, dtypes = chunk.table, column_dtypes(entities, features, source)
    rows = f"rows {chunk.first}-{chunk.first + max(table.num_rows, 1) - 1}"
    where = f"{chunk.where}, {rows}"
    check_columns(table.schema, chunk.where, dtypes)
    event = _micros(table.column(source.event_timestamp), where, source.event_timestamp)
    start, end = window
    keep = pc.less_equal(event, end)
    if start is not None:
        keep = pc.and_(keep, pc.greater(event, start))
    table, event = table.filter(keep), event.filter(keep)
    order = [("event", "ascending")]
    columns = {"event": event}
    if source.created_timestamp:
        column = table.column(source.created_timestamp)
        columns["created"] = _micros(column, where, source.created_timestamp)
        order.append(("created", "ascending"))
    indices = pc.sort_indices(pa.table(columns), sort_keys=order)
    table, event = table.take(indices), event.take(indices)

    keys = [
        _entities(table.column(source.entities.get(k, k)), where, source.entities.get(k, k))
        for k in entities
    ]
    names = [f.name for f in features]
    values = [
        _values(
            table.column(source.columns.get(f.name, f.name)),
            f,
            where,
            source.columns.get(f.name, f.name),
        )
        for f in features
    ]
    entity_keys = _entity_keys(entities, keys)
    value_rows = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
    if not features:
        value_rows = [{} for _ in entity_keys]
    return list(zip(entity_keys, event.to_pylist(), value_rows, strict=True))


def plain_rows(chunk: Chunk) -> list[dict[str, Value]]:
    """Every column of the chunk as rows of plain values: times as ISO 8601 text, decimals as
    floats, NaN as ``None``; a column of another kind is ``InvalidInput`` naming it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = chunk.table
    columns: list[list[Value]] = []
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        t = column.type
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            tz = getattr(t, "tz", None)
            times = pc.cast(column, pa.timestamp("us", tz=tz)) if pa.types.is_date(t) else column
            columns.append([None if v is None else v.isoformat() for v in times.to_pylist()])
        elif pa.types.is_decimal(t) or pa.types.is_floating(t):
            floats = column.cast(pa.float64())
            floats = pc.if_else(pc.is_nan(floats), pa.scalar(None, pa.float64()), floats)
            columns.append(floats.to_pylist())
        elif fits("int", t) or fits("bool", t) or fits("string", t) or fits("float_vector", t):
            columns.append(column.to_pylist())
        elif pa.types.is_null(t):
            columns.append([None] * len(column))
        else:
            raise InvalidInput(
                f"{chunk.where}: column {name!r} holds {t}, which a row cannot carry",
                details={"column": name},
            )
    names = table.column_names
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _entity_keys(entities: Sequence[str], columns: list[list[Value]]) -> list[str]:
    """The entity key of each row, as :func:`encode_entity_key` makes it (ints are their own
    JSON text, so they skip the encoder)."""
    parts = [
        [f"{name}={v}" for v in values]
        if all(type(v) is int for v in values)
        else [encode_entity_key([name], [v]) for v in values]
        for name, values in zip(entities, columns, strict=True)
    ]
    if len(parts) == 1:
        return parts[0]
    return ["|".join(texts) for texts in zip(*parts, strict=True)]


def _bad(where: str, column: str, what: str) -> InvalidInput:
    return InvalidInput(f"{where}, column {column!r}: {what}", details={"column": column})


def _micros(column: Any, where: str, name: str) -> pa.Array:
    """Event times as int64 microseconds since the epoch (naive times are UTC)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise _bad(where, name, f"{array.null_count} rows have no time")
    t = array.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        array = _parsed(array, where, name)
        t = array.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_date(t):
            array = pc.cast(array, pa.timestamp("s"))
        return pc.cast(
            pc.cast(array, pa.timestamp("us", tz=getattr(array.type, "tz", None))), pa.int64()
        )
    seconds = pc.cast(array, pa.float64())
    if not pc.all(pc.is_finite(seconds)).as_py():
        raise _bad(where, name, "epoch seconds must be finite")
    return pc.cast(pc.round(pc.multiply(seconds, 1_000_000)), pa.int64())


def _parsed(array: pa.Array, where: str, name: str) -> pa.Array:
    """ISO 8601 text as timestamps: arrow's parser for uniform text, Python's for the rest."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for target in (pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
        try:
            return pc.cast(array, target)
        except pa.ArrowInvalid:
            continue
    micros = []
    for index, text in enumerate(array.to_pylist()):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _bad(
                where, name, f"{text!r} (its row {index} here) is not an ISO 8601 time"
            ) from None
        micros.append(to_micros(moment if moment.tzinfo else moment.replace(tzinfo=UTC)))
    return pc.cast(pa.array(micros, pa.int64()), pa.timestamp("us", tz="UTC"))


def _entities(column: Any, where: str, name: str) -> list[Value]:
    import pyarrow as pa

    if column.null_count:
        raise _bad(where, name, f"{column.null_count} rows have no join key")
    if pa.types.is_integer(column.type):
        column = column.cast(pa.int64())
    values: list[Value] = column.to_pylist()
    return values


def _values(column: Any, feature: Feature, where: str, name: str) -> list[Value]:
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        if feature.dtype == "int":
            return list(column.cast(pa.int64()).to_pylist())
        if feature.dtype == "float":
            floats = column.cast(pa.float64())
            if pc.any(pc.is_inf(floats)).as_py():
                raise _bad(where, name, "infinite values (send nulls for missing)")
            if pc.any(pc.is_nan(floats)).as_py():  # NaN is how pandas writes a missing value
                floats = pc.if_else(pc.is_nan(floats), pa.scalar(None, pa.float64()), floats)
            return list(floats.to_pylist())
        if feature.dtype == "float_vector":
            vectors = column.cast(pa.list_(pa.float64()))
            flat = pc.list_flatten(vectors)
            if len(flat) and not pc.all(pc.is_finite(flat)).as_py():
                raise _bad(where, name, "vectors must hold finite numbers")
            return list(vectors.to_pylist())
        return list(column.to_pylist())
    except pa.ArrowInvalid as exc:
        raise _bad(where, name, f"not {feature.dtype} values: {exc}") from None
