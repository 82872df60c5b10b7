"""Query parameters every module's list and read routes share, documented with the bounds of the
contract types they are checked against (:func:`app.kernel.http.bodies.from_params`), so the
OpenAPI document says what the route takes."""

from __future__ import annotations

from typing import Annotated

from litestar.openapi.spec import OpenAPIType
from litestar.params import QueryParameter

from contracts.common import MAX_INT32, MAX_PAGE

__all__ = ["PageCursor", "PageLimit", "VersionQuery"]

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
    int | None,
    QueryParameter(
        description="A version number (default: the latest).",
        schema_extra={**_NOT_NULL, "type": OpenAPIType.INTEGER, "minimum": 1, "maximum": MAX_INT32},
    ),
]
"""``?version=N``: an older version instead of the latest."""
