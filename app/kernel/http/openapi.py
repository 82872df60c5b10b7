"""OpenAPI schema generation: contract Structs and the error answers every route may give.

litestar's own Struct plugin tests ``default not in {NODEFAULT, UNSET}``, which breaks on the
``= {}`` and ``= []`` defaults contract Structs use; this one compares by identity, marks
Structs that refuse unknown fields with ``additionalProperties: false`` and describes each Struct
with its docstring.

litestar documents its own ``{"status_code", "detail"}`` body for 400; :class:`ErrorResponsesPlugin`
documents Quarry's ``{"error", "code", "details"}`` for every error status a route can answer.

Many routes read their body themselves (raw bytes decoded by :mod:`app.kernel.http.bodies`, JSON or
msgpack, errors in Quarry's shape) and encode their answer themselves; :func:`documented` declares
the body and the answer they really take and give, without changing how either is handled.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.di import Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.params import Body
from litestar.plugins import ReceiveRoutePlugin
from litestar.plugins.core._msgspec import kwarg_definition_from_field
from litestar.routes import BaseRoute, HTTPRoute
from litestar.types.empty import Empty
from litestar.typing import FieldDefinition
from litestar.utils.helpers import unwrap_partial

from app.kernel.http.bodies import decode_body
from app.kernel.http.patterns import integer_pattern
from contracts.common import MAX_INT32, NAME_PATTERN

__all__ = [
    "JSON",
    "MODEL_REF_PATTERN",
    "MSGPACK",
    "DocstringsPlugin",
    "Error",
    "ErrorResponsesPlugin",
    "NoBody",
    "StructDefaultsSchemaPlugin",
    "documented",
    "error_responses",
    "summary_of",
]

JSON = "application/json"
MSGPACK = "application/x-msgpack"

_NAME = NAME_PATTERN[1:-1]
MODEL_REF_PATTERN = f"^{_NAME}(:{integer_pattern(1, MAX_INT32)}|@{_NAME})?$"
"""A model reference as a path parameter: ``name``, ``name:N`` or ``name@alias``, the version a
number the registry can hold (1 to 2**31 - 1) written without leading zeros."""


class Error(msgspec.Struct, frozen=True, kw_only=True):
    """Every error answer: a message, a stable machine code and details."""

    error: str
    code: str
    details: dict[str, Any]


class NoBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An action that takes no body: send nothing, or an empty JSON object."""


_DESCRIPTIONS = {
    400: "invalid_input (or contract_version_mismatch): malformed input or a broken rule",
    401: "unauthenticated: no valid API key",
    403: "permission_denied: the key lacks the route's scope",
    404: "not_found",
    409: "conflict with the current state (or an Idempotency-Key reused for another request)",
    413: "payload_too_large: the body is over the configured limit",
    422: "unprocessable: well-formed input that does not fit",
    429: "rate_limited, with Retry-After",
    500: "internal",
    503: "unavailable, with Retry-After",
    504: "deadline_exceeded",
}

COMMON_ERRORS = (400, 401, 403, 404, 429, 500, 503, 504)
"""Error statuses any route may answer (bad headers, auth, rate limit, dependencies, deadline)."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses`` documenting the error shape for ``statuses``.

    Pass a route's own error statuses (``responses=error_responses(409)``); the common ones
    are added to every route by :class:`ErrorResponsesPlugin`.
    """
    return {
        status: ResponseSpec(
            data_container=Error,
            description=_DESCRIPTIONS.get(status, "error"),
            generate_examples=False,
        )
        for status in statuses
    }


def documented(
    *,
    body: Any = None,
    answer: Any = None,
    status: int = 200,
    media_types: tuple[str, ...] = (JSON,),
    answer_media_types: tuple[str, ...] | None = None,
    body_required: bool = True,
    body_example: Any = None,
    answer_example: Any = None,
    errors: tuple[int, ...] = (),
    description: str | None = None,
    raw_answers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Route keyword arguments declaring what a handler that decodes and encodes by itself takes
    and gives: ``@post("/x", **documented(body=Thing, answer=Done, status=201))``.

    ``body`` is the request body type (in each of ``media_types``; optional unless
    ``body_required``), ``answer`` the type of the ``status`` answer (in ``answer_media_types``,
    by default those of the body; ``str`` with ``text/html`` for a page, ``bytes`` for
    ``application/octet-stream``); ``raw_answers`` maps other media types the answer may come
    in (raw bytes, NDJSON lines) to what they hold; ``errors`` are the route's own error
    statuses. The body is declared through a dependency the handler never asks for, so litestar
    documents it but never decodes it: the handler's own decoding, and its errors, stay as they
    are.
    """
    kwargs: dict[str, Any] = {}
    responses = error_responses(*errors)
    if body is not None:

        def declared_body(data: Any) -> None:
            """Never called: its ``data`` parameter declares the body in the schema."""

        # set here, not written in the signature: postponed annotations cannot see ``body``
        declared_body.__annotations__ = {
            "data": Annotated[body, Body(media_type=media_types[0])],
            "return": None,
        }

        kwargs["dependencies"] = {"declared_body": Provide(declared_body, sync_to_thread=False)}
        if body is NoBody:
            kwargs["before_request"] = _refuse_a_body
    answer_types = answer_media_types or media_types
    if answer is not None:
        responses[status] = ResponseSpec(
            data_container=answer,
            description=description or _success(status),
            media_type=answer_types[0],
            generate_examples=False,
        )
    kwargs["responses"] = responses
    kwargs["operation_class"] = _operation_class(
        body_types=media_types if body is not None else (),
        body_required=body_required,
        body_example=body_example,
        status=str(status),
        answer_types=answer_types if answer is not None else (),
        answer_example=answer_example,
        raw_answers=dict(raw_answers or {}),
    )
    return kwargs


_NO_BODY = msgspec.json.Decoder(NoBody)


async def _refuse_a_body(request: Request[Any, Any, Any]) -> None:
    """An action that takes no body refuses one that is not empty or ``{}`` (400), as the
    schema says, instead of ignoring it."""
    raw = await request.body()
    if raw.strip():
        decode_body(_NO_BODY, raw, what="body", example="no body, or {}")


def _success(status: int) -> str:
    return {201: "Created", 202: "Accepted"}.get(status, "OK")


def _operation_class(
    *,
    body_types: tuple[str, ...],
    body_required: bool,
    body_example: Any,
    status: str,
    answer_types: tuple[str, ...],
    answer_example: Any,
    raw_answers: dict[str, str],
) -> type[Operation]:
    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if isinstance(self.request_body, RequestBody) and body_types:
                self.request_body.required = body_required
                _spread(self.request_body.content, body_types, body_example)
            answer = (self.responses or {}).get(status)
            if isinstance(answer, OpenAPIResponse) and answer.content and answer_types:
                _spread(answer.content, answer_types, answer_example)
                for media_type, holds in raw_answers.items():
                    answer.content[media_type] = OpenAPIMediaType(schema=_raw(media_type, holds))

    return DocumentedOperation


def _raw(media_type: str, holds: str) -> Schema:
    binary = media_type == "application/octet-stream"
    return Schema(
        type=OpenAPIType.STRING,
        format=OpenAPIFormat.BINARY if binary else None,
        description=holds,
    )


def _spread(
    content: dict[str, OpenAPIMediaType], media_types: tuple[str, ...], example: Any
) -> None:
    """The first media type's schema given to the others too, ``example`` shown as JSON."""
    schema = content[media_types[0]].schema
    for media_type in media_types:
        shown = example is not None and media_type == JSON
        examples: dict[str, Example | Reference] | None = (
            {"example": Example(value=example)} if shown else None
        )
        content[media_type] = OpenAPIMediaType(schema=schema, examples=examples)


class ErrorResponsesPlugin(ReceiveRoutePlugin):
    """Documents the error answers of every route in the schema: the common statuses, 409 for
    POST (``Idempotency-Key`` reuse), 413 for methods with a body, and whatever the route lists
    itself in ``responses``."""

    def receive_route(self, route: BaseRoute) -> None:
        """Add the error responses to each handler of ``route`` that is in the schema."""
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            if not isinstance(handler, HTTPRouteHandler) or not handler.resolve_include_in_schema():
                continue
            statuses = set(COMMON_ERRORS)
            if handler.http_methods & _BODY_METHODS:
                statuses.add(413)
            if "POST" in handler.http_methods:
                statuses.add(409)
            own: Mapping[int, ResponseSpec] = handler.responses or {}
            handler.responses = {**error_responses(*sorted(statuses - set(own))), **own}


class DocstringsPlugin(ReceiveRoutePlugin):
    """Each operation's summary and description from its handler's docstring: the summary is
    the first paragraph up to its first full stop or colon, the description the whole text."""

    def receive_route(self, route: BaseRoute) -> None:
        """Fill in the summary and description each handler of ``route`` does not set itself."""
        if not isinstance(route, HTTPRoute):
            return
        for handler in route.route_handlers:
            text = inspect.getdoc(unwrap_partial(handler.fn))
            if not isinstance(handler, HTTPRouteHandler) or not text:
                continue
            if handler.summary is None:
                handler.summary = summary_of(text)
            if handler.description is None:
                handler.description = text


def summary_of(docstring: str) -> str:
    """The first paragraph of ``docstring`` up to its first full stop or colon."""
    first = " ".join(docstring.split("\n\n", 1)[0].split())
    stops = (i for i, pair in enumerate(itertools.pairwise(first)) if pair in _STOPS)
    # a stop inside ``literal text`` is not one
    cut = next((i for i in stops if first[:i].count("``") % 2 == 0), len(first))
    return first[:cut].rstrip(".")


_STOPS = {(".", " "), (":", " ")}


class StructDefaultsSchemaPlugin(StructSchemaPlugin):
    """Schemas for msgspec Structs whose defaults may be mutable containers."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Any:
        """Describe one Struct as a component schema."""
        hints = field_definition.get_type_hints(include_extras=True, resolve_generics=True)
        info: Any = msgspec.inspect.type_info(field_definition.type_)
        properties = {}
        for field in info.fields:
            kwarg = kwarg_definition_from_field(field)[0]
            # A Struct default would land on the Struct's shared component schema (whichever
            # field is described first wins), so it is left out: the component stays the same.
            unset = (
                field.default is msgspec.NODEFAULT
                or field.default is msgspec.UNSET
                or isinstance(field.default, msgspec.Struct)
            )
            properties[field.encode_name] = FieldDefinition.from_annotation(
                annotation=hints[field.name],
                name=field.encode_name,
                default=Empty if unset else field.default,
                **({"kwarg_definition": kwarg} if kwarg else {}),
            )
        required = [f.encode_name for f in info.fields if self._is_field_required(field=f)]
        if info.tag_field is not None:
            # a tagged Struct (a member of a union) is told apart by its tag: a required constant
            properties[info.tag_field] = FieldDefinition.from_annotation(Literal[info.tag])
            required.append(info.tag_field)
        schema = schema_creator.create_component_schema(
            field_definition, required=sorted(required), property_fields=properties
        )
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        if schema.description is None:
            schema.description = inspect.getdoc(field_definition.type_)
        for field in info.fields:
            _inner_bounds(
                schema.properties.get(field.encode_name) if schema.properties else None, field.type
            )
        _whole_bounds(schema)
        for key, value in getattr(field_definition.type_, "openapi_extra", {}).items():
            setattr(schema, key, value)
        return schema


_INSPECT = msgspec.inspect
_STRING_BOUNDS = {"pattern": "pattern", "min_length": "min_length", "max_length": "max_length"}
_NUMBER_BOUNDS = {
    "ge": "minimum",
    "le": "maximum",
    "gt": "exclusive_minimum",
    "lt": "exclusive_maximum",
    "multiple_of": "multiple_of",
}


def _inner_bounds(schema: Schema | Reference | None, info: Any) -> None:
    """The bounds of a list's items and a mapping's keys and values, which litestar leaves out
    (``list[Annotated[str, Meta(pattern=...)]]`` is documented as any list of strings)."""
    if isinstance(info, _INSPECT.Metadata):
        info = info.type
    if isinstance(info, _INSPECT.UnionType) and isinstance(schema, Schema) and schema.one_of:
        # ``X | None``: the bounds go to X's member of the ``oneOf``
        present = [t for t in info.types if not isinstance(t, _INSPECT.NoneType)]
        members = [m for m in schema.one_of if not (isinstance(m, Schema) and m.type == "null")]
        if len(present) == 1 and len(members) == 1:
            _inner_bounds(members[0], present[0])
        return
    if not isinstance(schema, Schema):
        return
    sequences = (_INSPECT.ListType, _INSPECT.SetType, _INSPECT.FrozenSetType, _INSPECT.VarTupleType)
    if isinstance(info, sequences) and isinstance(schema.items, Schema):
        _bound(schema.items, info.item_type)
    elif isinstance(info, _INSPECT.DictType):
        if isinstance(schema.additional_properties, Schema):
            _bound(schema.additional_properties, info.value_type)
        key = info.key_type
        if isinstance(key, _INSPECT.StrType) and (key.pattern or key.min_length or key.max_length):
            schema.property_names = Schema()
            _bound(schema.property_names, key)


def _bound(schema: Schema, info: Any) -> None:
    """``schema`` given the bounds msgspec checks for ``info`` (and those of its own items)."""
    if isinstance(info, _INSPECT.Metadata):
        info = info.type
    names = (
        _STRING_BOUNDS
        if isinstance(info, _INSPECT.StrType)
        else _NUMBER_BOUNDS
        if isinstance(info, _INSPECT.IntType | _INSPECT.FloatType)
        else {}
    )
    for constraint, keyword in names.items():
        value = getattr(info, constraint)
        if value is not None:
            setattr(schema, keyword, value)
    _inner_bounds(schema, info)


_BOUNDS = ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum", "multiple_of")


def _whole_bounds(schema: Schema | Reference) -> None:
    """Integer bounds written as integers: litestar writes every bound as a float, and a client
    reading ``"maximum": 2147483647.0`` may send ``30.0``, which an ``int`` field refuses."""
    if not isinstance(schema, Schema):
        return
    if schema.type == OpenAPIType.INTEGER:
        for key in _BOUNDS:
            value = getattr(schema, key)
            if isinstance(value, float) and value.is_integer():
                setattr(schema, key, int(value))
    nested = [*(schema.properties or {}).values(), *(schema.one_of or []), *(schema.any_of or [])]
    if isinstance(schema.items, Schema | Reference):
        nested.append(schema.items)
    if isinstance(schema.additional_properties, Schema | Reference):
        nested.append(schema.additional_properties)
    for inner in nested:
        _whole_bounds(inner)
