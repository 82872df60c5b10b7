"""OpenAPI schema generation: contract Structs and the error answers every route may give.

litestar's own Struct plugin tests ``default not in {NODEFAULT, UNSET}``, which breaks on the
``= {}`` and ``= []`` defaults contract Structs use; this one compares by identity, and marks
Structs that refuse unknown fields with ``additionalProperties: false``.

litestar documents its own ``{"status_code", "detail"}`` body for 400; :class:`ErrorResponsesPlugin`
documents Quarry's ``{"error", "code", "details"}`` for every error status a route can answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins import ReceiveRoutePlugin
from litestar.plugins.core._msgspec import kwarg_definition_from_field
from litestar.routes import BaseRoute, HTTPRoute
from litestar.types.empty import Empty
from litestar.typing import FieldDefinition

__all__ = ["Error", "ErrorResponsesPlugin", "StructDefaultsSchemaPlugin", "error_responses"]


class Error(msgspec.Struct, frozen=True, kw_only=True):
    """Every error answer: a message, a stable machine code and details."""

    error: str
    code: str
    details: dict[str, Any]


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


class StructDefaultsSchemaPlugin(StructSchemaPlugin):
    """Schemas for msgspec Structs whose defaults may be mutable containers."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Any:
        """Describe one Struct as a component schema."""
        hints = field_definition.get_type_hints(include_extras=True, resolve_generics=True)
        info: Any = msgspec.inspect.type_info(field_definition.type_)
        properties = {}
        for field in info.fields:
            kwarg = kwarg_definition_from_field(field)[0]
            unset = field.default is msgspec.NODEFAULT or field.default is msgspec.UNSET
            properties[field.encode_name] = FieldDefinition.from_annotation(
                annotation=hints[field.name],
                name=field.encode_name,
                default=Empty if unset else field.default,
                **({"kwarg_definition": kwarg} if kwarg else {}),
            )
        required = sorted(f.encode_name for f in info.fields if self._is_field_required(field=f))
        schema = schema_creator.create_component_schema(
            field_definition, required=required, property_fields=properties
        )
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        return schema
