"""Materialization routes under ``/v1/features``.

- ``POST /views/{name}/materialize``: ``{"start": ..., "end": ..., "chunk_rows": ...}`` (all
  optional; an empty body is ``{}``) queues a run and answers it (202)
- ``GET /materializations/{id}``: a run and its progress
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import PathParameter

from app.kernel.http.bodies import contract_scope, decode_body, json_response
from app.kernel.http.openapi import documented
from contracts.common import NAME_PATTERN, PositiveCount
from contracts.features import FeaturesService, GetMaterialization, Materialization, Materialize

__all__ = ["materialize_handlers"]

ViewName = Annotated[
    str, PathParameter(description="The view's name.", schema_extra={"pattern": NAME_PATTERN})
]
RunId = Annotated[str, PathParameter(description="The materialization's id.")]


class MaterializeBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/features/views/{name}/materialize``: the window (default: from the view's
    watermark to now) and the rows per chunk."""

    start: datetime | None = None
    end: datetime | None = None
    chunk_rows: PositiveCount = 10_000


_DECODER = msgspec.json.Decoder(MaterializeBody)
_EXAMPLE = '{"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"}'


def materialize_handlers(service: FeaturesService) -> list[Any]:
    """The materialization routes, calling ``service`` (local or remote)."""

    @post(
        "/views/{name:str}/materialize",
        opt=contract_scope(FeaturesService.materialize),
        status_code=202,
        **documented(body=MaterializeBody, answer=Materialization, status=202, body_required=False),
    )
    async def materialize(name: ViewName, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Load the view's source into the stores as a task; answers the queued run."""
        raw = await request.body()
        body = decode_body(_DECODER, raw, what="body", example=_EXAMPLE) if raw.strip() else None
        body = body or MaterializeBody()
        run = await service.materialize(
            Materialize(view=name, start=body.start, end=body.end, chunk_rows=body.chunk_rows)
        )
        return json_response(run, status_code=202)

    @get(
        "/materializations/{run_id:str}",
        opt=contract_scope(FeaturesService.get_materialization),
        **documented(answer=Materialization),
    )
    async def materialization(run_id: RunId) -> Response[bytes]:
        """A materialization run: status, rows stored, percentage and rate, error."""
        return json_response(await service.get_materialization(GetMaterialization(id=run_id)))

    return [materialize, materialization]
