"""Every error answer, litestar's own included, in one shape: ``{"error", "code", "details"}``."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from app.kernel.errors import error_for_status, error_headers, status_for
from contracts.common import InternalError, InvalidInput, QuarryError

__all__ = ["error_response", "exception_handlers"]

_log = logging.getLogger("quarry.http")

_MESSAGES = {
    404: "no route matches this path",
    405: "method not allowed on this path",
    413: "request body is larger than the configured limit",
}


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
    if isinstance(exc, ValidationException):
        error: QuarryError = InvalidInput(
            _validation_message(exc), details={"problems": _jsonable(exc.extra)}
        )
    else:
        message = _MESSAGES.get(exc.status_code) or exc.detail or "request failed"
        details: dict[str, Any] = {"path": request.url.path}
        if exc.status_code == 405:
            details["method"] = request.method
        error = error_for_status(exc.status_code, message, details)
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    response = error_response(error, headers)
    response.status_code = exc.status_code
    return response


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError("internal server error"))


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    for problem in extra:
        if isinstance(problem, dict) and problem.get("message"):
            where = problem.get("key")
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


exception_handlers: ExceptionHandlersMap = {
    QuarryError: _quarry_error,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
"""Handlers for the litestar app: contract errors, litestar's own, and anything unexpected."""
