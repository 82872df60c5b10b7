"""Reading features back: online values with statuses, and point-in-time rows offline.

Both paths take resolved feature references (``FeatureRef`` plus the view that holds it) and
answer values per entity row in request order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from app.modules.features import historical
from app.modules.features.keys import encode_entity_key, from_micros
from app.modules.features.online import OnlineStore
from app.modules.features.rows import FeatureRef, entity_columns, event_micros
from contracts.common import InvalidInput
from contracts.features import EVENT_TIMESTAMP, FeatureView, Value, ValueStatus

__all__ = [
    "OnlineColumn",
    "Resolved",
    "check_entity_rows",
    "entity_keys",
    "read_historical",
    "read_online",
]


@dataclass(frozen=True, slots=True)
class Resolved:
    """Feature references with the (latest) views that hold them, in request order."""

    refs: list[FeatureRef]
    views: dict[str, FeatureView]

    def view_names(self) -> list[str]:
        """The distinct views, in order of first reference."""
        return list(dict.fromkeys(ref.view for ref in self.refs))


@dataclass(slots=True)
class OnlineColumn:
    """One feature's values, statuses and event times, a slot per entity row."""

    values: list[Value]
    statuses: list[ValueStatus]
    timestamps: list[datetime | None]


def entity_keys(view: FeatureView, entities: Mapping[str, Sequence[Value]], rows: int) -> list[str]:
    """The entity key of each row for ``view``; a join key missing from ``entities`` is an error."""
    missing = [key for key in view.entities if key not in entities]
    if missing:
        raise InvalidInput(
            f"view {view.name!r} is keyed by {', '.join(view.entities)}:"
            f" entities lack {', '.join(missing)}",
            details={"view": view.name, "missing": missing},
        )
    columns = [entities[key] for key in view.entities]
    return [
        encode_entity_key(view.entities, [column[i] for column in columns]) for i in range(rows)
    ]


async def read_online(
    store: OnlineStore, resolved: Resolved, entities: Mapping[str, Sequence[Value]], rows: int
) -> list[OnlineColumn]:
    """Latest values per reference; TTL is checked now, against each value's event time."""
    by_keys: dict[tuple[str, ...], list[str]] = {}
    for name in resolved.view_names():
        by_keys.setdefault(tuple(resolved.views[name].entities), []).append(name)
    found: dict[str, list[tuple[int, dict[str, Value]] | None]] = {}
    for names in by_keys.values():
        keys = entity_keys(resolved.views[names[0]], entities, rows)
        answers = await store.read(names, keys)
        for name in names:
            found[name] = [answer.get(name) for answer in answers]
    now_us = int(time.time() * 1_000_000)
    return [
        _column(ref, resolved.views[ref.view], found[ref.view], now_us) for ref in resolved.refs
    ]


def _column(
    ref: FeatureRef,
    view: FeatureView,
    entries: list[tuple[int, dict[str, Value]] | None],
    now_us: int,
) -> OnlineColumn:
    ttl_us = view.ttl_seconds * 1_000_000
    column = OnlineColumn(values=[], statuses=[], timestamps=[])
    for entry in entries:
        if entry is None:
            column.values.append(None)
            column.statuses.append("NOT_FOUND")
            column.timestamps.append(None)
            continue
        event_us, values = entry
        value = values.get(ref.feature)
        if ttl_us and now_us - event_us >= ttl_us:
            status: ValueStatus = "OUTSIDE_MAX_AGE"
            value = None
        else:
            status = "NULL_VALUE" if value is None else "PRESENT"
        column.values.append(value)
        column.statuses.append(status)
        column.timestamps.append(from_micros(event_us))
    return column


def check_entity_rows(resolved: Resolved, entity_rows: Sequence[Mapping[str, Value]]) -> None:
    """Reject entity rows without a valid time or a join key some view needs (names the row)."""
    keys = list(
        dict.fromkeys(k for name in resolved.view_names() for k in resolved.views[name].entities)
    )
    for index, row in enumerate(entity_rows):
        event_micros(row.get(EVENT_TIMESTAMP), where=f"entity row {index}")
    entity_columns({key: [row.get(key) for row in entity_rows] for key in keys})


def read_historical(
    conn: Connection, resolved: Resolved, entity_rows: Sequence[Mapping[str, Value]]
) -> list[dict[str, Value]]:
    """Point-in-time rows for one chunk: each entity row extended with ``view:feature`` values.

    Runs on a database connection (in a worker thread): one query per view.
    """
    times = [
        event_micros(row.get(EVENT_TIMESTAMP), where=f"entity row {i}")
        for i, row in enumerate(entity_rows)
    ]
    out = [dict(row) for row in entity_rows]
    for name in resolved.view_names():
        view = resolved.views[name]
        columns = {key: [row.get(key) for row in entity_rows] for key in view.entities}
        entity_columns(columns)
        keys = entity_keys(view, columns, len(entity_rows))
        found = historical.point_in_time(
            conn,
            name,
            view.ttl_seconds * 1_000_000,
            list(zip(keys, times, strict=True)),
        )
        refs = [ref for ref in resolved.refs if ref.view == name]
        for row, entry in zip(out, found, strict=True):
            values = entry[1] if entry is not None else {}
            for ref in refs:
                row[str(ref)] = values.get(ref.feature)
    return out
