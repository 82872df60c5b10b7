"""The notifications contract: webhooks that receive the platform's events, signed.

A webhook names a URL and the events it wants (event type names such as
``ModelAliasChanged``, or glob patterns such as ``Model*`` or ``*``). Every matching event
becomes one delivery per webhook (an event delivered twice to the module is still one
delivery), posted with a ``Quarry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` header, retried with backoff, and listed with its attempts.
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

import msgspec

from contracts.common import Count, Limit, Page, Scope, Seconds, method

__all__ = [
    "VERSION",
    "Attempt",
    "DeleteWebhook",
    "Delivery",
    "DeliveryStatus",
    "EventPattern",
    "GetWebhook",
    "ListDeliveries",
    "ListFailedDeliveries",
    "ListWebhooks",
    "NotificationsService",
    "PutWebhook",
    "Redeliver",
    "Secret",
    "Url",
    "Webhook",
    "WebhookFormat",
]

VERSION = (1, 1)
"""Contract version ``(major, minor)``; remote calls refuse a different major.

1.1: failed deliveries of every webhook, newest failure first
(:meth:`NotificationsService.list_failed_deliveries`).
"""

WebhookFormat = Literal["json", "slack"]
"""``json``: the event in Quarry's envelope; ``slack``: ``{"text": ...}`` for a Slack incoming
webhook."""

DeliveryStatus = Literal["pending", "delivered", "failed"]
"""``pending`` (waiting for its next attempt), ``delivered`` (a 2xx answer) or ``failed`` (the
retry budget is spent; :meth:`NotificationsService.redeliver` tries again)."""

EventPattern = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.*?\-]{1,128}$",
        description="An event type name (`ModelAliasChanged`) or a glob pattern (`Model*`, `*`).",
    ),
]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Secret = Annotated[str, msgspec.Meta(min_length=16, max_length=256, pattern="^[\\x21-\\x7e]+$")]
"""A signing secret: 16-256 printable ASCII characters, no spaces."""


class PutWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """Create or replace webhook ``name``.

    Without ``secret``, a new webhook gets a generated one (answered once, in
    :attr:`Webhook.secret`) and an existing one keeps its own.
    """

    name: str
    url: Url
    events: Annotated[list[EventPattern], msgspec.Meta(min_length=1, max_length=64)]
    secret: Secret | None = None
    format: WebhookFormat = "json"


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook as stored (its secret is never answered back, except once when generated)."""

    name: str
    url: str
    events: list[str]
    format: WebhookFormat
    created_at: float
    updated_at: float
    secret: str | None = None
    """The secret Quarry generated for this webhook: only in the answer of the put that made it."""


class GetWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """Read one webhook."""

    name: str


class ListWebhooks(msgspec.Struct, frozen=True, kw_only=True):
    """One page of webhooks, ordered by name."""

    limit: Limit = 50
    cursor: str | None = None


class DeleteWebhook(msgspec.Struct, frozen=True, kw_only=True):
    """Delete a webhook and its deliveries (pending ones are not sent)."""

    name: str


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try at posting a delivery."""

    number: Count
    at: float
    """When it started, in seconds since the epoch."""
    duration_s: Seconds
    status_code: int | None = None
    """The receiver's HTTP status, ``None`` when no answer came (refused, timed out, ...)."""
    error: str | None = None
    """Why the attempt failed (``None`` when it succeeded)."""


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event for one webhook, with every attempt made so far (oldest first)."""

    id: str
    webhook: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    created_at: float
    next_attempt_at: float | None = None
    """When a pending delivery is tried next."""
    attempts: list[Attempt] = []


class ListDeliveries(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a webhook's deliveries, newest first, optionally of one status."""

    webhook: str
    status: DeliveryStatus | None = None
    limit: Limit = 50
    cursor: str | None = None


class ListFailedDeliveries(msgspec.Struct, frozen=True, kw_only=True):
    """One page of the failed deliveries of every webhook, the latest failure first."""

    limit: Limit = 50
    cursor: str | None = None


class Redeliver(msgspec.Struct, frozen=True, kw_only=True):
    """Send a delivery again (whatever its status), with a fresh retry budget."""

    webhook: str
    id: str


class NotificationsService(Protocol):
    """Webhooks for the platform's events: their definitions, deliveries and redeliveries."""

    @method(scope=Scope.ADMIN, idempotent=True)
    async def put_webhook(self, request: PutWebhook) -> Webhook:
        """Create or replace a webhook; ``InvalidInput`` for a URL that is not http(s), a host
        ``QUARRY_WEBHOOK_HOSTS`` does not allow, a host resolving to a private, loopback,
        link-local or metadata address no allowed network covers, or an unknown event name."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def get_webhook(self, request: GetWebhook) -> Webhook:
        """A webhook; ``NotFound`` if there is none."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_webhooks(self, request: ListWebhooks) -> Page[Webhook]:
        """One page of webhooks, ordered by name."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def delete_webhook(self, request: DeleteWebhook) -> Webhook:
        """Delete a webhook and its deliveries; answers what was deleted (``NotFound`` if none)."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_deliveries(self, request: ListDeliveries) -> Page[Delivery]:
        """One page of a webhook's deliveries with their attempts, newest first."""
        ...

    @method(scope=Scope.READ, idempotent=True)
    async def list_failed_deliveries(self, request: ListFailedDeliveries) -> Page[Delivery]:
        """One page of every webhook's failed deliveries with their attempts, the latest
        failure first."""
        ...

    @method(scope=Scope.ADMIN, idempotent=True)
    async def redeliver(self, request: Redeliver) -> Delivery:
        """Queue a delivery again at once with a fresh retry budget; ``NotFound`` if unknown."""
        ...
