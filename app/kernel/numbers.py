"""Integers read from text a client sent (headers, path segments), bounded before conversion.

``int()`` on untrusted text is a trap twice over: past Python's digit limit (4,300 digits) it
raises ``ValueError``, and a value that converts may still overflow a database column or a
buffer size. :func:`parse_int` checks the text's length and the value's range first, so every
caller answers the same 400 with the error shape.
"""

from __future__ import annotations

from contracts.common import InvalidInput

__all__ = ["INT32_MAX", "INT64_MAX", "parse_int"]

INT32_MAX = 2**31 - 1
"""The largest value a signed 32-bit column holds."""
INT64_MAX = 2**63 - 1
"""The largest value a signed 64-bit column holds."""


def parse_int(
    text: str, *, what: str, minimum: int = 0, maximum: int = INT64_MAX, field: str | None = None
) -> int:
    """``text`` as an integer in ``minimum..maximum``, or :class:`InvalidInput` naming ``what``.

    Only ASCII digits (and a leading ``-`` when ``minimum`` is negative) are accepted, after
    surrounding whitespace; text longer than the bounds could need is refused unread.
    """
    stripped = text.strip()
    digits = stripped[1:] if stripped.startswith("-") and minimum < 0 else stripped
    longest = max(len(str(minimum)), len(str(maximum)))
    if not (digits.isascii() and digits.isdigit()) or len(stripped) > longest:
        raise _refused(text, what, minimum, maximum, field)
    value = int(stripped)
    if not minimum <= value <= maximum:
        raise _refused(text, what, minimum, maximum, field)
    return value


def _refused(text: str, what: str, minimum: int, maximum: int, field: str | None) -> InvalidInput:
    shown = text if len(text) <= 40 else f"{text[:37]}..."
    return InvalidInput(
        f"invalid {what} {shown!r}: expected an integer from {minimum} to {maximum}",
        details={
            "field": field or what,
            "value": text[:100],
            "minimum": minimum,
            "maximum": maximum,
        },
    )
