"""Entity keys and event timestamps as the stores hold them.

An entity key is the canonical text of a row's join key values, in the view's join key order:
``user_id=1`` or ``user_id=1|country="fr"`` (values JSON-encoded, so ``1`` and ``"1"`` differ).
Views with the same join keys share entity keys (and, on Redis, one hash per entity).
Timestamps are integer microseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from contracts.features import Value

__all__ = ["encode_entity_key", "from_micros", "to_micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_json = msgspec.json.Encoder()


def encode_entity_key(join_keys: Sequence[str], values: Sequence[Value]) -> str:
    """The canonical key for ``values`` of ``join_keys`` (same order, same length)."""
    return "|".join(
        f"{name}={_json.encode(value).decode()}"
        for name, value in zip(join_keys, values, strict=True)
    )


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware ``datetime`` (naive ones are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC ``datetime`` of microseconds since the epoch."""
    return datetime.fromtimestamp(micros // 1_000_000, tz=UTC).replace(
        microsecond=micros % 1_000_000
    )
