"""The one place where contract errors become HTTP statuses (and back)."""

from __future__ import annotations

import math
from typing import Any

from contracts.common import (
    Conflict,
    ContractVersionMismatch,
    DeadlineExceeded,
    IntegrityError,
    InternalError,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuarryError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnprocessableInput,
)

__all__ = ["STATUS_BY_ERROR", "error_for_status", "error_headers", "status_for"]

STATUS_BY_ERROR: dict[type[QuarryError], int] = {
    InvalidInput: 400,
    ContractVersionMismatch: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnprocessableInput: 422,
    RateLimited: 429,
    InternalError: 500,
    IntegrityError: 502,
    Unavailable: 503,
    DeadlineExceeded: 504,
}

_BY_STATUS: dict[int, type[QuarryError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    422: UnprocessableInput,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: DeadlineExceeded,
}


def status_for(error: QuarryError) -> int:
    """The HTTP status of ``error`` (its nearest mapped base class; 500 when none)."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_headers(error: QuarryError) -> dict[str, str]:
    """Extra headers an error answer carries (``Retry-After`` for 429 and 503)."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(float(retry_after))))}


def error_for_status(
    status: int, message: str, details: dict[str, Any] | None = None
) -> QuarryError:
    """The contract error for an HTTP status that carried no Quarry error body."""
    cls = _BY_STATUS.get(status, InternalError)
    return cls(message, details=details)
