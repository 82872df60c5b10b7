"""Per-request call context: request id and deadline, set before anything else runs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
import structlog

from app.kernel import context
from app.kernel.context import CallContext
from app.kernel.errors import status_for
from contracts.common import InvalidInput, QuarryError

__all__ = ["RequestContextMiddleware", "send_error"]

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


class RequestContextMiddleware:
    """Reads ``x-request-id`` and ``quarry-deadline-ms`` into the call context; echoes the id."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = idempotency_key = None
        deadline_ms = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
            elif key == b"quarry-deadline-ms":
                deadline_ms = value
            elif key == b"quarry-idempotency-key":
                idempotency_key = value.decode("latin-1")[:255]
        request_id = request_id or uuid.uuid4().hex
        try:
            deadline = _deadline(deadline_ms)
        except QuarryError as exc:
            await send_error(send, exc, {"x-request-id": request_id})
            return
        echo = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), echo]
            await send(message)

        ctx = CallContext(deadline=deadline, request_id=request_id, idempotency_key=idempotency_key)
        with context.use(ctx), structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


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
