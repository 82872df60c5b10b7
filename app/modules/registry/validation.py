"""Checks on what callers send the registry (fields, model signatures), and its page cursors."""

from __future__ import annotations

import math
import re
from typing import Any

from app.kernel import cursors
from app.kernel.cursors import encode_cursor
from contracts.common import NAME_PATTERN, InvalidInput, ModelRef, validate_name
from contracts.registry import RESERVED_ALIASES, Signature

__all__ = [
    "DEFAULT_MAX_TENSOR_BYTES",
    "ELEMENT_BYTES",
    "MAX_CHUNK",
    "MAX_LIMIT",
    "MAX_VERSION",
    "check_alias",
    "check_chunk_size",
    "check_limit",
    "check_metrics",
    "check_ref",
    "check_str_map",
    "check_tensor_sizes",
    "check_text",
    "check_version_number",
    "could_prefix_a_name",
    "decode_cursor",
    "encode_cursor",
    "is_reserved_alias",
]

MAX_LIMIT = 500
"""The largest page a list answers."""

MAX_CHUNK = 64 << 20
"""The largest chunk an artifact stream sends."""

MAX_VERSION = 2**31 - 1
"""The largest version number: the version columns are 32-bit integers (PostgreSQL INTEGER)."""

DEFAULT_MAX_TENSOR_BYTES = 1 << 30
"""The default of ``QUARRY_MAX_TENSOR_BYTES``: 1 GiB for one row of an input or output."""

ELEMENT_BYTES: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
    "BYTES": 32,  # what ONNX Runtime allocates per string element (a std::string), empty or not
}
"""Bytes per element of each Open Inference Protocol dtype in ONNX Runtime's memory."""

MAX_TAG_KEY = 250
MAX_TAG_VALUE = 5000
MAX_TEXT = 20_000

_VERSION_ALIAS = re.compile(r"[vV][0-9]+")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]*")
_NAME = re.compile(NAME_PATTERN)


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
    """A version number: an integer from 1 to :data:`MAX_VERSION`."""
    valid = isinstance(version, int) and not isinstance(version, bool)
    if not valid or not 1 <= version <= MAX_VERSION:
        shown = f" {version}" if valid and abs(version) < 10**30 else ""
        raise InvalidInput(
            f"invalid version{shown}: expected a positive integer up to {MAX_VERSION}",
            details={"field": "version", "max": MAX_VERSION},
        )
    return int(version)


def check_ref(ref: ModelRef) -> ModelRef:
    """A parsed reference whose version (``name:N`` or ``name@vN``) is a valid version number."""
    if ref.version is not None:
        check_version_number(ref.version)
    elif ref.alias is not None and _VERSION_ALIAS.fullmatch(ref.alias):
        digits = ref.alias[1:]
        check_version_number(int(digits) if len(digits) <= 10 else MAX_VERSION + 1)
    return ref


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
    """A string-to-string map such as tags or params, with bounded keys and values, no NULs."""
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
        if "\x00" in key or "\x00" in item:
            raise _nul(field)
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
    """A free-text field such as a description (no NUL: PostgreSQL text cannot hold one)."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidInput(
            f"{field} must be a string of at most {MAX_TEXT} characters", details={"field": field}
        )
    if "\x00" in value:
        raise _nul(field)
    return value


def check_tensor_sizes(signature: Signature, max_bytes: int) -> Signature:
    """Refuse inputs and outputs whose static dimensions alone exceed ``max_bytes``.

    Dynamic dimensions (``-1``) count as 1, so this is the size of the smallest tensor the model
    accepts or produces: a model that declares a ``[2**40]`` input could never be fed, and
    warming it up would exhaust the server's memory.
    """
    for kind, specs in (("input", signature.inputs), ("output", signature.outputs)):
        for spec in specs:
            elements = math.prod(1 if d < 0 else d for d in spec.shape)
            size = ELEMENT_BYTES.get(spec.dtype, 8) * elements
            if size > max_bytes:
                raise InvalidInput(
                    f"{kind} {spec.name!r} declares static dimensions {list(spec.shape)} of"
                    f" {spec.dtype}: {size} bytes at the least, over the limit of {max_bytes}"
                    " (QUARRY_MAX_TENSOR_BYTES)",
                    details={
                        "reason": "tensor_too_large",
                        kind: spec.name,
                        "bytes": size,
                        "max": max_bytes,
                    },
                )
    return signature


def could_prefix_a_name(prefix: Any) -> bool:
    """Whether some valid name starts with ``prefix`` (if not, a prefix filter matches nothing)."""
    return (
        isinstance(prefix, str) and len(prefix) <= 128 and _NAME_CHARS.fullmatch(prefix) is not None
    )


def _nul(field: str) -> InvalidInput:
    return InvalidInput(
        f"{field} must not contain NUL characters (\\u0000)", details={"field": field}
    )


def decode_cursor(cursor: str, kind: str, *types: type) -> tuple[Any, ...]:
    """The sort key inside ``cursor`` (see :mod:`app.kernel.cursors`), whose names and version
    numbers must also be valid ones."""
    key = cursors.decode_cursor(cursor, kind, *types)
    if not all(_cursor_part(v, t) for v, t in zip(key, types, strict=True)):
        raise InvalidInput(
            "invalid cursor: pass the next_cursor of the previous page unchanged",
            details={"field": "cursor"},
        )
    return key


def _cursor_part(value: Any, kind: type) -> bool:
    # cursors hold names and version numbers: anything else was not made by encode_cursor
    if type(value) is not kind:
        return False
    if isinstance(value, str):
        return _NAME.fullmatch(value) is not None
    return isinstance(value, int) and 1 <= value <= MAX_VERSION
