"""Per-request call context: request id, deadline and idempotency key, read from the headers.

:class:`app.kernel.http.tracing.RequestMiddleware` reads them before anything else runs (it is
the one ASGI layer around the app) and echoes the request id on every answer.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from app.kernel.context import CallContext
from app.kernel.errors import status_for
from app.kernel.ids import unique_id
from contracts.common import InvalidInput, QuarryError

__all__ = ["read_context", "send_error"]

_MAX_DEADLINE_MS = 24 * 3600 * 1000
_ENCODER = msgspec.json.Encoder()


async def send_error(send: Any, error: QuarryError, headers: dict[str, str] | None = None) -> None:
    """Answer an ASGI request with a contract error (for middleware running before routing)."""
    from app.kernel.errors import error_headers

    body = _ENCODER.encode(error.to_dict())
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for key, value in {**error_headers(error), **(headers or {})}.items():
        raw.append((key.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status_for(error), "headers": raw})
    await send({"type": "http.response.body", "body": body})


def read_context(headers: list[tuple[bytes, bytes]]) -> tuple[str, CallContext | InvalidInput]:
    """The request id and the call context that ASGI ``headers`` give (``x-request-id``,
    ``quarry-deadline-ms``, ``quarry-idempotency-key``), or the error a bad deadline is."""
    request_id = idempotency_key = None
    deadline_ms = None
    for key, value in headers:
        if key == b"x-request-id":
            request_id = value.decode("latin-1")[:128]
        elif key == b"quarry-deadline-ms":
            deadline_ms = value
        elif key == b"quarry-idempotency-key":
            idempotency_key = value.decode("latin-1")[:255]
    request_id = request_id or unique_id()
    try:
        deadline = _deadline(deadline_ms)
    except InvalidInput as exc:
        return request_id, exc
    ctx = CallContext(deadline=deadline, request_id=request_id, idempotency_key=idempotency_key)
    return request_id, ctx


def _deadline(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    digits = raw.strip()
    # plain ASCII digits only: int() would also take '+5', '1_000' and other scripts' digits
    millis = int(digits) if digits.isdigit() and len(digits) <= 12 else -1
    if not 0 < millis <= _MAX_DEADLINE_MS:
        raise InvalidInput(
            "header quarry-deadline-ms must be a positive whole number of milliseconds",
            details={"header": "quarry-deadline-ms", "value": raw.decode("latin-1")[:64]},
        )
    return time.monotonic() + millis / 1000
