"""What a delivery posts: the body for the webhook's format, and its signature.

``json`` bodies are Quarry's envelope::

    {"id": "<event id>", "type": "ModelAliasChanged", "publisher": "registry",
     "created_at": 1764780000.25, "data": {...the event's fields...}}

``slack`` bodies are ``{"text": "..."}``, a line a Slack incoming webhook shows as it is.

Every attempt is signed afresh: ``Quarry-Signature: t=<unix seconds>,v1=<hex>``, the HMAC-SHA256
of ``"<t>.<body>"`` under the webhook's secret, so a receiver checks both who sent the body and
how long ago (to refuse replays).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

__all__ = ["SIGNATURE_HEADER", "render", "sign"]

SIGNATURE_HEADER = "Quarry-Signature"

_ENCODER = msgspec.json.Encoder()


def render(
    fmt: str, *, event: Any, event_id: str, event_type: str, publisher: str, created_at: float
) -> bytes:
    """The body posted for ``event`` to a webhook of format ``fmt``."""
    data = msgspec.to_builtins(event)
    if isinstance(data, dict):
        data.pop("type", None)  # the Struct tag: already the envelope's ``type``
    if fmt == "slack":
        return _ENCODER.encode({"text": _line(event_type, publisher, data)})
    envelope = {
        "id": event_id,
        "type": event_type,
        "publisher": publisher,
        "created_at": created_at,
        "data": data,
    }
    return _ENCODER.encode(envelope)


def _line(event_type: str, publisher: str, data: object) -> str:
    if isinstance(data, dict):
        fields = ", ".join(f"{k}={_short(v)}" for k, v in data.items() if v not in (None, [], {}))
    else:
        fields = _short(data)
    return f"[Quarry] {event_type} from {publisher}: {fields}"


def _short(value: object) -> str:
    text = value if isinstance(value, str) else _ENCODER.encode(value).decode()
    return text if len(text) <= 200 else text[:199] + "…"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Quarry-Signature`` header value for ``body`` sent at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
