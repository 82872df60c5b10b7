"""Regular expressions that say exactly which texts a parameter takes, for the OpenAPI document.

A bound such as "a version from 1 to 2**31 - 1" checked on a path segment or a query value that
arrives as text is written as a pattern, so that the schema accepts what the route accepts and
nothing else (a fuzzer reading the schema then sends no valid-looking value the route refuses).
"""

from __future__ import annotations

import re

__all__ = ["DURATION_UNITS", "duration_pattern", "integer_pattern"]

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
"""The units a duration may carry, in seconds."""


def integer_pattern(low: int, high: int) -> str:
    """A regular expression (without anchors) matching the decimal integers from ``low`` to
    ``high`` (both at least 0), written without leading zeros."""
    if not 0 <= low <= high:
        raise ValueError(f"no integers from {low} to {high}")
    return "(?:" + "|".join(_merged(_ranges(low, high))) + ")"


def _merged(parts: list[str]) -> list[str]:
    """Runs of whole decades (``[1-9][0-9]{2}``, ``[1-9][0-9]{3}``) as one (``[1-9][0-9]{2,3}``)."""
    out: list[str] = []
    run: list[int] = []
    decade = re.compile(r"\[1-9\](?:\[0-9\]\{(\d+)\})?")
    for part in [*parts, ""]:
        found = decade.fullmatch(part)
        if found:
            run.append(int(found[1] or 0))
            continue
        if run:
            out.append("[1-9]" + _digits(run[0], run[-1]))
            run = []
        if part:
            out.append(part)
    return out


def _digits(low: int, high: int) -> str:
    """Between ``low`` and ``high`` more digits (none when both are 0)."""
    if high == 0:
        return ""
    return f"[0-9]{{{low}}}" if low == high else f"[0-9]{{{low},{high}}}"


def _ranges(low: int, high: int) -> list[str]:
    """Patterns for [low, high], split where the number of digits changes."""
    if len(str(low)) < len(str(high)):
        split = 10 ** len(str(low)) - 1
        return _ranges(low, split) + _ranges(split + 1, high)
    return [_span(str(low), str(high))]


def _span(low: str, high: str) -> str:
    """A pattern for the digit strings of one length from ``low`` to ``high``."""
    if low == high:
        return low
    if len(low) == 1:
        return f"[{low}-{high}]"
    rest = len(low) - 1
    if low[0] == high[0]:
        return f"{low[0]}(?:{_span(low[1:], high[1:])})"
    parts = []
    first, last = int(low[0]), int(high[0])
    if low[1:] != "0" * rest:  # the numbers from low up to the end of its first digit
        parts.append(f"{low[0]}(?:{_span(low[1:], '9' * rest)})")
        first += 1
    tail = None
    if high[1:] != "9" * rest:  # the numbers from the start of high's first digit up to high
        tail = f"{high[0]}(?:{_span('0' * rest, high[1:])})"
        last -= 1
    if first <= last:
        digit = str(first) if first == last else f"[{first}-{last}]"
        parts.append(f"{digit}[0-9]{{{rest}}}")
    if tail:
        parts.append(tail)
    return "|".join(parts)


def duration_pattern(max_seconds: float, *, positive: bool = False) -> str:
    """A regular expression (anchored) for a duration of at most ``max_seconds`` (and more than
    zero when ``positive``): a whole number of seconds, or a number with a unit (``90``, ``30s``,
    ``5m``, ``2h``, ``1d``, ``1.5h``)."""
    least = 1 if positive else 0
    options = [integer_pattern(least, int(max_seconds))]
    for unit, seconds in DURATION_UNITS.items():
        most = int(max_seconds // seconds)
        if most < least:
            continue
        forms = [f"{integer_pattern(least, most)}(?:\\.0{{1,6}})?"]
        if most >= 1:  # a fraction only below the largest whole amount
            forms.append(
                f"{integer_pattern(least, most - 1)}\\.[0-9]{{1,6}}" if most > least else ""
            )
        if positive:
            forms.append("0\\.[0-9]{0,5}[1-9][0-9]{0,5}")
        options.append("(?:" + "|".join(forms) + f"){unit}")
    return "^(?:" + "|".join(options) + ")$"
