"""Every error answer, litestar's own included, in one shape: ``{"error", "code", "details"}``."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from app.kernel.errors import (
    error_for_status,
    error_headers,
    refused_value,
    status_for,
    unavailable_from,
)
from app.kernel.http.methods import allow_header
from contracts.common import InternalError, InvalidInput, NotFound, PayloadTooLarge, QuarryError

__all__ = [
    "TOO_LARGE",
    "contract_error",
    "error_response",
    "exception_handlers",
    "json_not_found",
]

_log = logging.getLogger("quarry.http")

TOO_LARGE = "request body is larger than the configured limit"
"""The message of every 413 for a body over ``QUARRY_MAX_BODY_BYTES``."""
_MESSAGES = {
    404: "no route matches this path",
    405: "method not allowed on this path",
    413: TOO_LARGE,
}

# litestar 2's multipart parser answers a 400 with this detail when a form has too many parts or
# a part's headers are too long (its own FIXME says 413; litestar 3 will send one)
_MULTIPART_LIMIT = "Request Entity Too Large"


def error_response(error: QuarryError, headers: dict[str, str] | None = None) -> Response[Any]:
    """The JSON answer for a contract error."""
    return Response(
        content=error.to_dict(),
        status_code=status_for(error),
        headers={**error_headers(error), **(headers or {})},
        media_type="application/json",
    )


def _quarry_error(_request: Request[Any, Any, Any], exc: QuarryError) -> Response[Any]:
    return error_response(exc)


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        problems = {} if exc.extra is None else {"problems": _jsonable(exc.extra)}
        error: QuarryError = InvalidInput(_validation_message(exc), details=problems)
    elif status == 400 and exc.detail == _MULTIPART_LIMIT:
        status = 413
        error = PayloadTooLarge(
            "the multipart form has too many parts or a part header that is too long",
            details={"path": request.url.path},
        )
    else:
        message = _MESSAGES.get(exc.status_code) or exc.detail or "request failed"
        details: dict[str, Any] = {"path": request.url.path}
        if exc.status_code == 405:
            details["method"] = request.method
        error = error_for_status(exc.status_code, message, details)
    headers = {
        k: allow_header(v.split(","))
        for k, v in (exc.headers or {}).items()
        if k.lower() == "allow"
    }
    response = error_response(error, headers)
    response.status_code = status
    return response


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return error_response(contract_error(exc, request.method, request.url.path))


def contract_error(exc: Exception, method: str, path: str) -> QuarryError:
    """The contract error answering an exception that is not one (raised outside a contract
    call: middleware, a route): a refused value, an outage, else a logged internal error."""
    refused = refused_value(exc)
    if refused is not None:
        return refused
    outage = unavailable_from(exc)
    if outage is not None:
        _log.debug("%s %s: %s", method, path, outage.message, exc_info=exc)
        return outage
    _log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return InternalError("internal server error")


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    for problem in extra:
        if isinstance(problem, dict) and problem.get("message"):
            where = problem.get("key")
            if problem.get("source") == "body" and problem["message"] == repr(where):
                return "the request needs a body"  # litestar's KeyError for a missing body
            return f"{where}: {problem['message']}" if where else str(problem["message"])
    return exc.detail or "invalid request"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


async def json_not_found(response: Any) -> Any:
    """``after_request`` hook: litestar's HTML 404 page for unknown ``/schema/...`` paths, as JSON.

    Quarry itself never answers HTML errors; litestar's OpenAPI router does for any schema path
    no render plugin serves. ``async`` on purpose: litestar runs sync hooks on a worker thread.
    """
    if not isinstance(response, Response):  # an ASGI app answering itself (RPC)
        return response
    if response.status_code != 404 or response.media_type != MediaType.HTML:
        return response
    return error_response(NotFound(_MESSAGES[404]))


exception_handlers: ExceptionHandlersMap = {
    QuarryError: _quarry_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
"""Handlers for the litestar app: contract errors, litestar's own, and anything unexpected."""
