"""The features module's public routes under ``/v1/features``.

- ``GET /views``, ``GET|PUT /views/{name}`` (``?version=N`` reads an older version)
- ``POST /views/{name}/rows``: ``{"rows": [...], "to": "online_and_offline"}``; with
  ``Accept: application/x-ndjson`` the rows are written ``chunk_rows`` at a time and the answer
  streams one progress line per committed chunk
- ``GET /services``, ``GET|PUT /services/{name}``
- ``POST /online`` (Feast-shaped), ``POST /historical`` (the answer streams as it is computed):
  ``features`` or a feature ``service`` (as the contract names it; ``feature_service``, the name
  these routes used first, is taken too); with an ``output`` the rows go to that Parquet file
  and the answer says where and how many
- ``GET /transform-states/{id}``
- ``POST /views/{name}/materialize``, ``GET /materializations/{id}`` (:mod:`.api_materialize`)
- ``GET|PUT /views/{name}/expectations`` (:mod:`.api_expectations`)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec
from litestar import Request, Response, Router, get, post, put
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import PathParameter
from litestar.response import Stream

from app.kernel.http.bodies import contract_scope, decode_body, from_params, json_response
from app.kernel.http.openapi import documented
from app.kernel.http.params import PageCursor, PageLimit, VersionQuery, version_number
from app.kernel.http.patterns import integer_pattern
from app.modules.features.api_expectations import expectation_handlers
from app.modules.features.api_materialize import materialize_handlers
from contracts.common import MAX_INT32, NAME_PATTERN, Count, InvalidInput, Page, PositiveCount
from contracts.features import (
    Feature,
    FeatureService,
    FeatureSource,
    FeaturesService,
    FeatureView,
    GetFeatureService,
    GetFeatureView,
    GetHistoricalFeatures,
    GetOnlineFeatures,
    GetTransformState,
    HistoricalFeatures,
    ListFeatureServices,
    ListFeatureViews,
    OnlineFeatures,
    PushResult,
    PushRows,
    PutFeatureService,
    PutFeatureView,
    StreamRows,
    Transform,
    TransformState,
    Value,
)

__all__ = ["routes"]

NDJSON = "application/x-ndjson"
T = TypeVar("T")

Name = Annotated[
    str,
    PathParameter(
        description="The view's or service's name.", schema_extra={"pattern": NAME_PATTERN}
    ),
]
SERVICE_REF_PATTERN = f"^{NAME_PATTERN[1:-1]}(:{integer_pattern(1, MAX_INT32)})?$"
"""A feature service named by a read: ``name`` or ``name:N``."""
StateId = Annotated[str, PathParameter(description="The transform state's id.")]

ONLINE_EXAMPLE = {"features": ["users:age"], "entities": {"user_id": [1, 2]}}
ONLINE_ANSWER_EXAMPLE = {
    "metadata": {"feature_names": ["user_id", "users:age"]},
    "results": [
        {"values": [1, 2], "statuses": ["PRESENT", "PRESENT"], "event_timestamps": [None, None]},
        {
            "values": [31.0, None],
            "statuses": ["PRESENT", "NOT_FOUND"],
            "event_timestamps": ["2026-01-01T00:00:00Z", None],
        },
    ],
}


ColumnName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]


def _at_least_one(what: str) -> Any:
    return msgspec.Meta(min_length=1, description=f"At least one {what}.")


class ViewBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/features/views/{name}``."""

    entities: Annotated[list[ColumnName], _at_least_one("join key")]
    features: Annotated[list[Feature], _at_least_one("feature")]
    ttl_seconds: Count = 0
    description: str = ""
    tags: dict[str, str] = {}
    source: FeatureSource | None = None


class ServiceBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/features/services/{name}``."""

    features: Annotated[list[str], _at_least_one("``view:feature`` reference")]
    transforms: list[Transform] = []
    description: str = ""


class RowsBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/features/views/{name}/rows``."""

    rows: Annotated[list[dict[str, Value]], _at_least_one("row")]
    to: Literal["online", "offline", "online_and_offline"] = "online_and_offline"
    chunk_rows: PositiveCount = 10_000


ServiceRef = Annotated[
    str,
    msgspec.Meta(
        pattern=SERVICE_REF_PATTERN,
        description="A feature service whose features are read: `name` or `name:N`.",
    ),
]
OldServiceRef = Annotated[
    str,
    msgspec.Meta(
        pattern=SERVICE_REF_PATTERN,
        extra_json_schema={
            "description": "The same as `service`, under the name this route first used; kept"
            " for existing callers (both given and different: 400).",
            "extra": {"deprecated": True},
        },
    ),
]
_FEATURES_OR_SERVICE = {
    "any_of": [
        Schema(required=["features"], properties={"features": Schema(min_items=1)}),
        Schema(required=["service"], properties={"service": Schema(type=OpenAPIType.STRING)}),
        Schema(
            required=["feature_service"],
            properties={"feature_service": Schema(type=OpenAPIType.STRING)},
        ),
    ]
}


class OnlineBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/features/online``: ``features`` (``view:feature`` references), or a feature
    ``service`` whose features are read (``feature_service`` is an older name for it)."""

    features: list[str] = []
    service: ServiceRef | None = None
    feature_service: OldServiceRef | None = None
    entities: dict[str, list[Value]]

    openapi_extra: ClassVar[dict[str, Any]] = _FEATURES_OR_SERVICE


OutputPath = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        description="A `.parquet` file to write the rows to instead of answering them: a path"
        " under the source roots (relative to the first) or an `s3://` URL under an `s3://`"
        ' root. The answer is then `{"rows": [], "output": ..., "rows_written": N}`.',
    ),
]


class HistoricalBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/features/historical``: ``features`` or a feature ``service`` as for online
    reads, and the entity rows (join keys + ``event_timestamp``), or an ``entity_source`` to
    read them from (as a view's source); ``output``: a Parquet file to write the rows to."""

    features: list[str] = []
    service: ServiceRef | None = None
    feature_service: OldServiceRef | None = None
    entity_rows: Annotated[list[dict[str, Value]], _at_least_one("entity row")] | None = None
    entity_source: FeatureSource | None = None
    output: OutputPath | None = None

    openapi_extra: ClassVar[dict[str, Any]] = _FEATURES_OR_SERVICE


def _service(body: OnlineBody | HistoricalBody) -> str | None:
    """The feature service a read names, under either name; ``InvalidInput`` for two."""
    if body.service and body.feature_service and body.service != body.feature_service:
        raise InvalidInput(
            f"service {body.service!r} and feature_service {body.feature_service!r} differ:"
            " give one (feature_service is the older name of service)",
            details={"field": "service"},
        )
    return body.service or body.feature_service


_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[type, msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t)
    for t in (ViewBody, ServiceBody, RowsBody, OnlineBody, HistoricalBody)
}


def _decode(raw: bytes, body_type: type[T], example: str) -> T:
    # the decoder kept for body_type decodes a body_type; the dict's value type cannot say so
    return decode_body(_DECODERS[body_type], raw, what="body", example=example)  # type: ignore[no-any-return]


def routes(service: FeaturesService) -> list[Any]:
    """Public routes of the features module, calling ``service`` (local or remote)."""
    return [
        Router(
            path="/v1/features/views", route_handlers=_view_handlers(service), tags=["features"]
        ),
        Router(
            path="/v1/features/services",
            route_handlers=_service_handlers(service),
            tags=["features"],
        ),
        Router(
            path="/v1/features",
            route_handlers=[
                *_read_handlers(service),
                *materialize_handlers(service),
                *expectation_handlers(service),
            ],
            tags=["features"],
        ),
    ]


def _view_handlers(service: FeaturesService) -> list[Any]:
    @get(
        "/",
        opt=contract_scope(FeaturesService.list_views),
        **documented(answer=Page[FeatureView]),
    )
    async def list_views(limit: PageLimit = 50, cursor: PageCursor = None) -> Response[bytes]:
        """One page of feature views (latest versions) ordered by name."""
        request = from_params(ListFeatureViews, limit=limit, cursor=cursor)
        return json_response(await service.list_views(request))

    @get(
        "/{name:str}",
        opt=contract_scope(FeaturesService.get_view),
        **documented(answer=FeatureView),
    )
    async def get_view(name: Name, version: VersionQuery = None) -> Response[bytes]:
        """A feature view: its latest version, or ``?version=N``."""
        request = from_params(GetFeatureView, name=name, version=version_number(version))
        return json_response(await service.get_view(request))

    @put(
        "/{name:str}",
        opt=contract_scope(FeaturesService.put_view),
        status_code=200,
        **documented(body=ViewBody, answer=FeatureView),
    )
    async def put_view(name: Name, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Create a view, or give it a new version when it changes."""
        example = '{"entities": ["user_id"], "features": [{"name": "age", "dtype": "float"}]}'
        body = _decode(await request.body(), ViewBody, example)
        view = await service.put_view(PutFeatureView(name=name, **msgspec.structs.asdict(body)))
        return json_response(view)

    @post(
        "/{name:str}/rows",
        opt=contract_scope(FeaturesService.push),
        status_code=200,
        **documented(
            body=RowsBody,
            answer=PushResult,
            raw_answers={NDJSON: "With Accept: application/x-ndjson: one IngestProgress a line"},
        ),
    )
    async def push_rows(name: Name, request: Request[Any, Any, Any]) -> Response[Any]:
        """Push rows (atomic per request; per chunk with ``Accept: application/x-ndjson``)."""
        example = '{"rows": [{"user_id": 1, "event_timestamp": "...", "age": 30.0}]}'
        body = _decode(await request.body(), RowsBody, example)
        if NDJSON in request.headers.get("accept", ""):
            stream = service.ingest(
                StreamRows(view=name, rows=body.rows, to=body.to, chunk_rows=body.chunk_rows)
            )
            first = await anext(stream)  # errors found before the first chunk answer as usual
            return Stream(_lines(first, stream), media_type=NDJSON)
        return json_response(await service.push(PushRows(view=name, rows=body.rows, to=body.to)))

    return [list_views, get_view, put_view, push_rows]


async def _lines(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    yield _ENCODER.encode(first) + b"\n"
    async for item in rest:
        yield _ENCODER.encode(item) + b"\n"


def _service_handlers(service: FeaturesService) -> list[Any]:
    @get(
        "/",
        opt=contract_scope(FeaturesService.list_services),
        **documented(answer=Page[FeatureService]),
    )
    async def list_services(limit: PageLimit = 50, cursor: PageCursor = None) -> Response[bytes]:
        """One page of feature services (latest versions) ordered by name."""
        request = from_params(ListFeatureServices, limit=limit, cursor=cursor)
        return json_response(await service.list_services(request))

    @get(
        "/{name:str}",
        opt=contract_scope(FeaturesService.get_service),
        **documented(answer=FeatureService),
    )
    async def get_service(name: Name, version: VersionQuery = None) -> Response[bytes]:
        """A feature service: its latest version, or ``?version=N``."""
        request = from_params(GetFeatureService, name=name, version=version_number(version))
        return json_response(await service.get_service(request))

    @put(
        "/{name:str}",
        opt=contract_scope(FeaturesService.put_service),
        status_code=200,
        **documented(body=ServiceBody, answer=FeatureService),
    )
    async def put_service(name: Name, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Create a feature service, or give it a new version when it changes."""
        body = _decode(await request.body(), ServiceBody, '{"features": ["view:feature"]}')
        return json_response(
            await service.put_service(PutFeatureService(name=name, **msgspec.structs.asdict(body)))
        )

    return [list_services, get_service, put_service]


def _read_handlers(service: FeaturesService) -> list[Any]:
    @post(
        "/online",
        opt=contract_scope(FeaturesService.get_online),
        status_code=200,
        **documented(
            body=OnlineBody,
            answer=OnlineFeatures,
            body_example=ONLINE_EXAMPLE,
            answer_example=ONLINE_ANSWER_EXAMPLE,
        ),
    )
    async def online(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Latest values per entity, column-oriented like Feast's feature server."""
        example = '{"features": ["view:feature"], "entities": {"user_id": [1, 2]}}'
        body = _decode(await request.body(), OnlineBody, example)
        answer = await service.get_online(
            GetOnlineFeatures(
                features=body.features, service=_service(body), entities=body.entities
            )
        )
        return json_response(answer)

    @post(
        "/historical",
        opt=contract_scope(FeaturesService.get_historical),
        status_code=200,
        **documented(body=HistoricalBody, answer=HistoricalFeatures),
    )
    async def historical(request: Request[Any, Any, Any]) -> Stream | Response[bytes]:
        """Point-in-time correct rows in request order: ``{"rows": [...]}``, streamed; or,
        given an ``output``, written to that Parquet file (the answer says where and how many)."""
        example = (
            '{"features": ["view:feature"],'
            ' "entity_rows": [{"user_id": 1, "event_timestamp": "2026-01-01T00:00:00Z"}]}'
        )
        body = _decode(await request.body(), HistoricalBody, example)
        read = GetHistoricalFeatures(
            features=body.features,
            service=_service(body),
            entity_rows=body.entity_rows or [],
            entity_source=body.entity_source,
            output=body.output,
        )
        if body.output is not None:
            return json_response(await service.get_historical(read))
        chunks = service.stream_historical(read)
        first = await anext(chunks)  # bad requests fail here, before the 200 is sent
        return Stream(_rows_document(first, chunks), media_type="application/json")

    @get(
        "/transform-states/{state_id:str}",
        opt=contract_scope(FeaturesService.get_transform_state),
        **documented(answer=TransformState),
    )
    async def transform_state(state_id: StateId) -> Response[bytes]:
        """A fitted transform state: the statistics and the model input columns."""
        return json_response(await service.get_transform_state(GetTransformState(id=state_id)))

    return [online, historical, transform_state]


async def _rows_document(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    # Every chunk holds at least one row.
    yield b'{"rows":[' + b",".join(_ENCODER.encode(row) for row in first.rows)
    async for chunk in rest:
        yield b"," + b",".join(_ENCODER.encode(row) for row in chunk.rows)
    yield b"]}"
