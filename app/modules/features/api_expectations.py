"""Expectation routes under ``/v1/features``.

- ``GET /views/{name}/expectations``: the view's expectations and the violations warned pushes
  let through
- ``PUT /views/{name}/expectations``: ``{"expectations": [...], "on_violation": "reject"}``
  (declared by hand, or the ``expectations`` that ``GET /v1/monitoring/models/{ref}/expectations``
  fitted on a model version's training profile, with ``fitted_from`` naming it)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, put
from litestar.params import PathParameter

from app.kernel.http.bodies import contract_scope, decode_body, json_response
from app.kernel.http.openapi import documented
from contracts.common import NAME_PATTERN
from contracts.features import (
    Expectation,
    FeatureExpectations,
    FeaturesService,
    GetExpectations,
    PutExpectations,
)

__all__ = ["expectation_handlers"]

ViewName = Annotated[
    str, PathParameter(description="The view's name.", schema_extra={"pattern": NAME_PATTERN})
]


class ExpectationsBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/features/views/{name}/expectations`` (an empty list removes them)."""

    expectations: list[Expectation] = []
    on_violation: Literal["reject", "warn"] = "reject"
    fitted_from: str | None = None


_DECODER = msgspec.json.Decoder(ExpectationsBody)
_EXAMPLE = '{"expectations": [{"feature": "age", "min": 0, "max": 120}], "on_violation": "warn"}'


def expectation_handlers(service: FeaturesService) -> list[Any]:
    """The expectation routes, calling ``service`` (local or remote)."""
    path = "/views/{name:str}/expectations"

    @get(
        path,
        opt=contract_scope(FeaturesService.get_expectations),
        **documented(answer=FeatureExpectations),
    )
    async def get_expectations(name: ViewName) -> Response[bytes]:
        """The view's expectations, what a violation does, and how many warned pushes let
        through."""
        return json_response(await service.get_expectations(GetExpectations(view=name)))

    @put(
        path,
        opt=contract_scope(FeaturesService.put_expectations),
        status_code=200,
        **documented(body=ExpectationsBody, answer=FeatureExpectations),
    )
    async def put_expectations(name: ViewName, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Set the view's expectations (replacing earlier ones): pushes breaking one are refused
        (``reject``, 400 naming the row and feature) or written and reported (``warn``)."""
        body = decode_body(_DECODER, await request.body(), what="body", example=_EXAMPLE)
        answer = await service.put_expectations(
            PutExpectations(view=name, **msgspec.structs.asdict(body))
        )
        return json_response(answer)

    return [get_expectations, put_expectations]
