"""The notifications module's public routes under ``/v1/notifications``.

- ``GET /webhooks``, ``GET|PUT|DELETE /webhooks/{name}``: ``PUT`` takes ``url``, ``events``
  (event type names or glob patterns), an optional ``secret`` and ``format`` (``json`` or
  ``slack``)
- ``GET /webhooks/{name}/deliveries`` (``?status=pending|delivered|failed``), newest first,
  each with its attempts
- ``POST /webhooks/{name}/deliveries/{id}/redeliver``
- ``GET /deliveries/failed``: every webhook's failed deliveries, the latest failure first

Writes need the ``admin`` scope, reads ``read`` (from the contract's markers).
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

import msgspec
from litestar import Router, delete, get, post, put
from litestar.openapi.spec import OpenAPIType
from litestar.params import JSONBody, PathParameter, QueryParameter

from app.kernel.http.bodies import contract_scope, from_params
from app.kernel.http.openapi import NoBody, documented
from app.kernel.http.params import PageCursor, PageLimit
from contracts.common import NAME_PATTERN, Page
from contracts.notifications import (
    DeleteWebhook,
    Delivery,
    DeliveryStatus,
    EventPattern,
    GetWebhook,
    ListDeliveries,
    ListFailedDeliveries,
    ListWebhooks,
    NotificationsService,
    PutWebhook,
    Redeliver,
    Secret,
    Url,
    Webhook,
    WebhookFormat,
)

__all__ = ["WebhookBody", "routes"]

Name = Annotated[
    str,
    PathParameter(
        description="The webhook's name.", schema_extra={"pattern": NAME_PATTERN, "max_length": 128}
    ),
]
DeliveryId = Annotated[
    str, PathParameter(description="The delivery's id.", schema_extra={"max_length": 36})
]
StatusFilter = Annotated[
    str | None,
    QueryParameter(
        description="Only deliveries of this status.",
        schema_extra={
            "one_of": None,
            "type": OpenAPIType.STRING,
            "enum": list(get_args(DeliveryStatus)),
        },
    ),
]


class WebhookBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PUT /v1/notifications/webhooks/{name}``."""

    url: Url
    events: Annotated[list[EventPattern], msgspec.Meta(min_length=1, max_length=64)]
    secret: Secret | None = None
    format: WebhookFormat = "json"


def routes(service: NotificationsService) -> list[Router]:
    """The webhook routes, bound to ``service``, in one router at ``/v1/notifications``."""
    path = "/webhooks/{name:str}"
    svc = NotificationsService

    @get("/webhooks", opt=contract_scope(svc.list_webhooks))
    async def list_webhooks(limit: PageLimit = 50, cursor: PageCursor = None) -> Page[Webhook]:
        """One page of webhooks, ordered by name (secrets are never shown)."""
        return await service.list_webhooks(from_params(ListWebhooks, limit=limit, cursor=cursor))

    @get(path, opt=contract_scope(svc.get_webhook))
    async def get_webhook(name: Name) -> Webhook:
        """A webhook (its secret is never shown)."""
        return await service.get_webhook(GetWebhook(name=name))

    @put(path, opt=contract_scope(svc.put_webhook))
    async def put_webhook(name: Name, data: JSONBody[WebhookBody]) -> Webhook:
        """Create or replace a webhook. 400 for a URL that is not http(s), a host
        ``QUARRY_WEBHOOK_HOSTS`` does not allow, a host resolving to a private, loopback,
        link-local or metadata address, or an unknown event type. Without ``secret`` a new
        webhook gets a generated one, answered once in ``secret``."""
        asked = PutWebhook(
            name=name, url=data.url, events=data.events, secret=data.secret, format=data.format
        )
        return await service.put_webhook(asked)

    @delete(path, opt=contract_scope(svc.delete_webhook), status_code=200)
    async def delete_webhook(name: Name) -> Webhook:
        """Delete a webhook and its deliveries; answers what was deleted."""
        return await service.delete_webhook(DeleteWebhook(name=name))

    @get(f"{path}/deliveries", opt=contract_scope(svc.list_deliveries))
    async def list_deliveries(
        name: Name, status: StatusFilter = None, limit: PageLimit = 50, cursor: PageCursor = None
    ) -> Page[Delivery]:
        """One page of a webhook's deliveries, newest first, each with its attempts."""
        asked = from_params(ListDeliveries, webhook=name, status=status, limit=limit, cursor=cursor)
        return await service.list_deliveries(asked)

    @get("/deliveries/failed", opt=contract_scope(svc.list_failed_deliveries))
    async def list_failed_deliveries(
        limit: PageLimit = 50, cursor: PageCursor = None
    ) -> Page[Delivery]:
        """One page of every webhook's failed deliveries, the latest failure first."""
        asked = from_params(ListFailedDeliveries, limit=limit, cursor=cursor)
        return await service.list_failed_deliveries(asked)

    @post(
        f"{path}/deliveries/{{id:str}}/redeliver",
        opt=contract_scope(svc.redeliver),
        status_code=200,
        **documented(body=NoBody, body_required=False),
    )
    async def redeliver(name: Name, id: DeliveryId) -> Delivery:
        """Send a delivery again at once, with a fresh retry budget, whatever its status."""
        return await service.redeliver(Redeliver(webhook=name, id=id))

    handlers: list[Any] = [
        list_webhooks,
        get_webhook,
        put_webhook,
        delete_webhook,
        list_deliveries,
        list_failed_deliveries,
        redeliver,
    ]
    return [Router(path="/v1/notifications", route_handlers=handlers, tags=["notifications"])]
