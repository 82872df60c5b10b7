"""Checking what callers send: view and service specs, feature references, rows and entities.

Every check raises :class:`~contracts.common.InvalidInput` whose message names the row index and
field at fault, so one bad row rejects a batch before anything is written.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TypeGuard

from app.modules.features.keys import encode_entity_key, to_micros
from contracts.common import InvalidInput, validate_name
from contracts.features import EVENT_TIMESTAMP, Feature, FeatureView, PutFeatureView, Value

__all__ = [
    "FeatureRef",
    "check_value",
    "check_view",
    "entity_columns",
    "event_micros",
    "parse_ref",
    "pushed_rows",
]

_DTYPES = ("int", "float", "bool", "string", "float_vector")
_MAX_EPOCH_S = 253_402_300_799
"""9999-12-31T23:59:59Z: epoch seconds beyond it (or before year 1) are not a time."""


@dataclass(frozen=True, slots=True)
class FeatureRef:
    """``view:feature`` split in two."""

    view: str
    feature: str

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"


def parse_ref(text: str) -> FeatureRef:
    """Parse a ``view:feature`` reference; anything else is ``InvalidInput``."""
    view, sep, feature = text.partition(":")
    if not sep or not view or not feature or ":" in feature:
        raise InvalidInput(
            f"feature reference {text!r} is not of the form 'view:feature'",
            details={"feature": text},
        )
    validate_name(view, what="feature view name")
    validate_name(feature, what="feature name")
    return FeatureRef(view, feature)


def check_view(request: PutFeatureView) -> None:
    """Reject a view spec with bad names, duplicates, a bad TTL or defaults of the wrong type."""
    validate_name(request.name, what="feature view name")
    if not request.entities:
        raise InvalidInput("a feature view needs at least one entity join key")
    if not request.features:
        raise InvalidInput("a feature view needs at least one feature")
    if request.ttl_seconds < 0:
        raise InvalidInput("ttl_seconds must be >= 0 (0 = values never expire)")
    seen: set[str] = set()
    for name in [*request.entities, *(f.name for f in request.features)]:
        validate_name(name, what="entity or feature name")
        if name == EVENT_TIMESTAMP:
            raise InvalidInput(f"{EVENT_TIMESTAMP!r} is reserved for the rows' event time")
        if name in seen:
            raise InvalidInput(f"{name!r} appears twice among the view's entities and features")
        seen.add(name)
    for feature in request.features:
        if feature.default is not None:
            try:
                check_value(feature, feature.default)
            except InvalidInput as exc:
                raise InvalidInput(f"default of {feature.name!r}: {exc}") from None


def check_value(feature: Feature, value: Value) -> Value:
    """``value`` as stored for ``feature`` (ints widen to float); ``InvalidInput`` otherwise."""
    if value is None:
        return None
    checked = _CHECKS[feature.dtype](value)
    if checked is _WRONG:
        raise InvalidInput(f"expected {feature.dtype}, got {type(value).__name__} {_short(value)}")
    return checked


class _Wrong(enum.Enum):
    """What a check answers for a value of the wrong type (an enum member, so it narrows)."""

    WRONG = enum.auto()


_WRONG: Final = _Wrong.WRONG


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(value: object) -> float | _Wrong:
    if not _number(value):
        return _WRONG
    if not math.isfinite(value):
        raise InvalidInput(f"{value} is not a finite number (send null for missing)")
    return float(value)


def _int(value: object) -> int | _Wrong:
    if not _number(value) or not isinstance(value, int):
        return _WRONG
    if not -(2**63) <= value < 2**63:
        raise InvalidInput(f"{value} does not fit in a 64-bit int")
    return value


def _vector(value: object) -> list[float] | _Wrong:
    if not isinstance(value, list) or not all(_number(v) and math.isfinite(v) for v in value):
        return _WRONG
    return [float(v) for v in value]


_CHECKS: dict[str, Callable[[object], Value | _Wrong]] = {
    "float": _float,
    "int": _int,
    "bool": lambda value: value if isinstance(value, bool) else _WRONG,
    "string": lambda value: value if isinstance(value, str) else _WRONG,
    "float_vector": _vector,
}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def event_micros(value: Value, *, where: str, future_limit_us: int | None = None) -> int:
    """An ``event_timestamp`` (ISO 8601 text or epoch seconds) as epoch microseconds."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(
                f"{where}: {EVENT_TIMESTAMP} {value!r} is not an ISO 8601 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        micros = to_micros(moment)
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if not -_MAX_EPOCH_S <= value <= _MAX_EPOCH_S:
            raise InvalidInput(f"{where}: {EVENT_TIMESTAMP} {value} is outside years 1-9999")
        micros = round(value * 1_000_000)
    elif value is None:
        raise InvalidInput(f"{where}: {EVENT_TIMESTAMP} is missing")
    else:
        raise InvalidInput(
            f"{where}: {EVENT_TIMESTAMP} must be ISO 8601 text or epoch seconds,"
            f" got {_short(value)}"
        )
    if future_limit_us is not None and micros > future_limit_us:
        raise InvalidInput(
            f"{where}: {EVENT_TIMESTAMP} {value!r} is in the future beyond the allowed tolerance"
        )
    return micros


def _entity_value(value: object, *, where: str) -> Value:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"{where}: entity keys must be int or string, got {_short(value)}")
    return value


def pushed_rows(
    view: FeatureView, rows: Sequence[Mapping[str, Value]], *, tolerance_s: float
) -> list[tuple[str, int, dict[str, Value]]]:
    """Validate a batch for ``view``: ``(entity_key, event_us, values)`` per row.

    Every row needs each join key and ``event_timestamp``; a field that is neither a join key nor
    a feature of the view is an error; an absent feature is stored as ``None``.
    """
    if not rows:
        raise InvalidInput("no rows: push at least one row")
    features = {f.name: f for f in view.features}
    keys = set(view.entities)
    limit = int((time.time() + tolerance_s) * 1_000_000)
    out = []
    for index, row in enumerate(rows):
        where = f"row {index}"
        for field in row:
            if field not in features and field not in keys and field != EVENT_TIMESTAMP:
                raise InvalidInput(
                    f"{where}: {field!r} is not a feature of view {view.name!r}"
                    f" (features: {', '.join(features)})",
                    details={"row": index, "field": field},
                )
        entity = []
        for key in view.entities:
            if row.get(key) is None:
                raise InvalidInput(
                    f"{where}: join key {key!r} is missing", details={"row": index, "field": key}
                )
            entity.append(_entity_value(row[key], where=f"{where}, {key!r}"))
        micros = event_micros(row.get(EVENT_TIMESTAMP), where=where, future_limit_us=limit)
        values: dict[str, Value] = {}
        for name, feature in features.items():
            try:
                values[name] = check_value(feature, row.get(name))
            except InvalidInput as exc:
                raise InvalidInput(
                    f"{where}, {name!r}: {exc}", details={"row": index, "field": name}
                ) from None
        out.append((encode_entity_key(view.entities, entity), micros, values))
    return out


def entity_columns(entities: Mapping[str, Sequence[Value]]) -> int:
    """Check ``{join key: values}`` columns (same length, int or string keys); answer the rows."""
    if not entities:
        raise InvalidInput("no entities: give at least one join key with values")
    lengths = {len(values) for values in entities.values()}
    if len(lengths) != 1:
        raise InvalidInput(
            "every entity join key needs the same number of values",
            details={key: len(values) for key, values in entities.items()},
        )
    for key, values in entities.items():
        for index, value in enumerate(values):
            _entity_value(value, where=f"entity row {index}, {key!r}")
    return lengths.pop()
