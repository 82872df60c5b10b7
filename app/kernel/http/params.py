"""Query parameters every module's list and read routes share, documented with the bounds of the
contract types they are checked against (:func:`app.kernel.http.bodies.from_params`), so the
OpenAPI document says what the route takes."""

from __future__ import annotations

import re
from typing import Annotated

from litestar.openapi.spec import OpenAPIType
from litestar.params import QueryParameter

from app.kernel.http.patterns import DURATION_UNITS, duration_pattern, integer_pattern
from contracts.common import MAX_INT32, MAX_PAGE, MAX_SECONDS, InvalidInput

__all__ = [
    "DURATION_PATTERN",
    "PageCursor",
    "PageLimit",
    "VersionQuery",
    "parse_duration",
    "version_number",
]

# an optional parameter is left out, never sent as null: its schema is the value's alone
_NOT_NULL = {"one_of": None}

PageLimit = Annotated[
    int,
    QueryParameter(description="Page size.", schema_extra={"minimum": 1, "maximum": MAX_PAGE}),
]
"""``?limit=``: how many items a page holds."""

PageCursor = Annotated[
    str | None,
    QueryParameter(
        description="The `next_cursor` of the previous page, unchanged.",
        schema_extra={**_NOT_NULL, "type": OpenAPIType.STRING},
    ),
]
"""``?cursor=``: where the page starts (opaque)."""

VersionQuery = Annotated[
    str | None,
    QueryParameter(
        description="A version number (default: the latest).",
        schema_extra={**_NOT_NULL, "type": OpenAPIType.INTEGER, "minimum": 1, "maximum": MAX_INT32},
    ),
]
"""``?version=N``: an older version instead of the latest. Read as text (an ``int | None``
parameter would take ``?version=null`` for no version) and turned into a number by
:func:`version_number`."""

_VERSION = re.compile(integer_pattern(1, MAX_INT32))


def version_number(text: str | None) -> int | None:
    """The number ``?version=`` gives (``None`` when it is left out); ``InvalidInput`` for
    anything but a whole number from 1 to 2**31 - 1."""
    if text is None:
        return None
    if not _VERSION.fullmatch(text):
        raise InvalidInput(
            f"invalid version {text[:40]!r}: expected a whole number from 1 to {MAX_INT32}",
            details={"field": "version"},
        )
    return int(text)


DURATION_PATTERN = duration_pattern(MAX_SECONDS)
"""A duration as text: seconds (``300``) or a number with a unit (``30s``, ``5m``, ``2h``,
``1d``, ``1.5h``), at most :data:`contracts.common.MAX_SECONDS`."""


def parse_duration(text: str | float, pattern: str = DURATION_PATTERN) -> float:
    """Seconds from a number, or from a text matching ``pattern`` (by default
    :data:`DURATION_PATTERN`; a route with tighter bounds passes its own
    :func:`~app.kernel.http.patterns.duration_pattern`); ``InvalidInput`` otherwise."""
    if isinstance(text, int | float):
        return float(text)
    if not re.fullmatch(pattern, text):
        raise InvalidInput(
            f"{text[:40]!r} is not a duration such as 300, 30s, 5m, 2h or 1d within the bounds"
            " the route documents",
            details={"pattern": pattern},
        )
    if text[-1] in DURATION_UNITS:
        return float(text[:-1]) * DURATION_UNITS[text[-1]]
    return float(text)
