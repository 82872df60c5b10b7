"""Opaque page cursors: the sort key of a page's last item, checked when it comes back.

A cursor is the URL-safe base64 of ``[kind, *key]`` as JSON; ``kind`` names what is paged, so a
cursor of one list is refused by another. Anything a client changed is ``InvalidInput``, and so
is a key no column holds (an integer past 64 bits, a float that is not finite), which would
otherwise reach the database and fail there.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import msgspec

from contracts.common import InvalidInput

__all__ = ["decode_cursor", "encode_cursor"]


def encode_cursor(kind: str, *key: str | int | float) -> str:
    """The cursor for the sort key ``key`` of a list of ``kind``."""
    raw = msgspec.json.encode([kind, *key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, kind: str, *types: type) -> tuple[Any, ...]:
    """The sort key inside ``cursor``; it must be of ``kind`` with parts of ``types``.

    An ``int`` part is accepted where ``float`` is asked for (JSON does not keep ``1.0``); an
    ``int`` part must fit a signed 64-bit column and a ``float`` part be finite.
    """
    try:
        key = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        key = None
    valid = (
        isinstance(key, list)
        and len(key) == len(types) + 1
        and key[0] == kind
        and all(_fits(v, t) for v, t in zip(key[1:], types, strict=True))
    )
    if not valid:
        raise InvalidInput(
            "invalid cursor: pass the next_cursor of the previous page unchanged",
            details={"field": "cursor"},
        )
    return tuple(float(v) if t is float else v for v, t in zip(key[1:], types, strict=True))


def _fits(value: Any, kind: type) -> bool:
    if type(value) is int and kind in (int, float):
        return -(2**63) <= value < 2**63
    if kind is float:
        return type(value) is float and math.isfinite(value)
    return type(value) is kind
