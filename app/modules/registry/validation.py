"""Checks on what callers send the registry, and its opaque page cursors."""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

import msgspec

from contracts.common import InvalidInput, validate_name
from contracts.registry import RESERVED_ALIASES

__all__ = [
    "MAX_CHUNK",
    "MAX_LIMIT",
    "check_alias",
    "check_chunk_size",
    "check_limit",
    "check_metrics",
    "check_str_map",
    "check_text",
    "check_version_number",
    "decode_cursor",
    "encode_cursor",
    "is_reserved_alias",
]

MAX_LIMIT = 500
"""The largest page a list answers."""

MAX_CHUNK = 64 << 20
"""The largest chunk an artifact stream sends."""

MAX_TAG_KEY = 250
MAX_TAG_VALUE = 5000
MAX_TEXT = 20_000

_VERSION_ALIAS = re.compile(r"[vV][0-9]+")


def is_reserved_alias(alias: str) -> bool:
    """``latest`` and ``v<digits>`` read as something else and cannot be set."""
    return alias.lower() in RESERVED_ALIASES or _VERSION_ALIAS.fullmatch(alias) is not None


def check_alias(alias: str) -> str:
    """A valid alias that may be set, read or removed; :class:`InvalidInput` otherwise."""
    validate_name(alias, what="alias")
    if is_reserved_alias(alias):
        raise InvalidInput(
            f"alias {alias!r} is reserved: 'latest' and 'v<number>' always mean the highest live"
            " version and version <number>",
            details={"field": "alias", "value": alias},
        )
    return alias


def check_version_number(version: Any) -> int:
    """A version number: a positive integer."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInput(
            f"invalid version {version!r}: expected a positive integer",
            details={"field": "version"},
        )
    return version


def check_limit(limit: Any) -> int:
    """A page size between 1 and :data:`MAX_LIMIT`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(
            f"invalid limit {limit!r}: expected 1 to {MAX_LIMIT}",
            details={"field": "limit", "max": MAX_LIMIT},
        )
    return limit


def check_chunk_size(size: Any) -> int:
    """An artifact chunk size between 1 byte and :data:`MAX_CHUNK`."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_CHUNK:
        raise InvalidInput(
            f"invalid chunk_size {size!r}: expected 1 to {MAX_CHUNK} bytes",
            details={"field": "chunk_size", "max": MAX_CHUNK},
        )
    return size


def check_str_map(value: Any, field: str) -> dict[str, str]:
    """A string-to-string map such as tags or params, with bounded keys and values."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a map of strings to strings", details={"field": field})
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise InvalidInput(
                f"{field} must map strings to strings; {key!r}: {item!r} does not",
                details={"field": field},
            )
        if not key or len(key) > MAX_TAG_KEY or len(item) > MAX_TAG_VALUE:
            raise InvalidInput(
                f"{field} keys hold 1-{MAX_TAG_KEY} characters and values at most {MAX_TAG_VALUE}",
                details={"field": field, "key": key[:MAX_TAG_KEY]},
            )
    return dict(value)


def check_metrics(value: Any) -> dict[str, float]:
    """Metrics: names to finite numbers."""
    if not isinstance(value, dict):
        raise InvalidInput(
            "metrics must be a map of names to numbers", details={"field": "metrics"}
        )
    out: dict[str, float] = {}
    for key, item in value.items():
        number_like = isinstance(item, (int, float)) and not isinstance(item, bool)
        if not isinstance(key, str) or not key or not number_like or not math.isfinite(item):
            raise InvalidInput(
                f"metrics must map names to finite numbers; {key!r}: {item!r} does not",
                details={"field": "metrics"},
            )
        out[key] = float(item)
    return out


def check_text(value: Any, field: str) -> str:
    """A free-text field such as a description."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidInput(
            f"{field} must be a string of at most {MAX_TEXT} characters", details={"field": field}
        )
    return value


def encode_cursor(*key: str | int) -> str:
    """An opaque cursor for the sort key ``key``."""
    raw = msgspec.json.encode(list(key))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, kind: str, *types: type) -> tuple[Any, ...]:
    """The sort key inside ``cursor``, which must start with ``kind`` and match ``types``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        key = None
    valid = (
        isinstance(key, list)
        and len(key) == len(types) + 1
        and key[0] == kind
        and all(type(v) is t for v, t in zip(key[1:], types, strict=True))
    )
    if not valid:
        raise InvalidInput(
            "invalid cursor: pass the next_cursor of the previous page unchanged",
            details={"field": "cursor"},
        )
    return tuple(key[1:])
