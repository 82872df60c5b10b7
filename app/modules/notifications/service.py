"""``LocalNotificationsService``: webhooks, the event handler that queues deliveries, and the
contract's reads and redeliveries."""

from __future__ import annotations

import fnmatch
import logging
import secrets
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from app.kernel.cursors import decode_cursor, encode_cursor
from app.kernel.db import Database
from app.kernel.events import EventMeta
from app.modules.notifications import store
from app.modules.notifications.dispatcher import Dispatcher
from app.modules.notifications.egress import Egress
from app.modules.notifications.payloads import render
from app.modules.notifications.sender import Sender
from app.modules.notifications.settings import NotificationsSettings
from contracts.common import InvalidInput, NotFound, Page, validate_name
from contracts.notifications import (
    DeleteWebhook,
    Delivery,
    GetWebhook,
    ListDeliveries,
    ListFailedDeliveries,
    ListWebhooks,
    PutWebhook,
    Redeliver,
    Webhook,
)

__all__ = ["LocalNotificationsService"]

_GLOB = frozenset("*?[")


class LocalNotificationsService:
    """The notifications contract over this module's database."""

    def __init__(
        self,
        *,
        db: Database,
        config: NotificationsSettings,
        event_types: Sequence[str],
        logger: logging.Logger,
    ) -> None:
        self._db = db
        self._event_types = sorted(event_types)
        self._egress = Egress(config.webhook_hosts)
        sender = Sender(
            self._egress, timeout_s=config.timeout_s, max_response_bytes=config.max_response_bytes
        )
        self.dispatcher = Dispatcher(db, sender, config, logger)

    async def start(self) -> None:
        """Start sending deliveries."""
        await self.dispatcher.start()

    async def close(self) -> None:
        """Stop sending deliveries."""
        await self.dispatcher.stop()

    # --- webhooks -----------------------------------------------------------------------------

    async def put_webhook(self, request: PutWebhook) -> Webhook:
        validate_name(request.name, what="webhook")
        events = list(dict.fromkeys(request.events))
        for pattern in events:
            self._check_pattern(pattern)
        await self._egress.check(request.url)
        values: dict[str, object] = {
            "name": request.name,
            "url": request.url,
            "events": events,
            "format": request.format,
        }
        generated = None

        def put(conn: Connection) -> Webhook:
            nonlocal generated
            existing = store.get_webhook(conn, request.name)
            secret = request.secret
            if secret is None and existing is None:
                secret = generated = "whsec_" + secrets.token_urlsafe(32)
            row_values = values if secret is None else {**values, "secret": secret}
            store.put_webhook(conn, row_values, now=time.time())
            row = store.get_webhook(conn, request.name)
            assert row is not None  # written just above, in this transaction
            return store.webhook_of(row, secret=generated)

        return await self._db.write(put)

    def _check_pattern(self, pattern: str) -> None:
        if _GLOB.isdisjoint(pattern):
            if pattern not in self._event_types:
                raise InvalidInput(
                    f"unknown event type {pattern!r}: known are {', '.join(self._event_types)}",
                    details={"field": "events", "value": pattern, "known": self._event_types},
                )
        elif not fnmatch.filter(self._event_types, pattern):
            raise InvalidInput(
                f"event pattern {pattern!r} matches no event type: known are"
                f" {', '.join(self._event_types)}",
                details={"field": "events", "value": pattern, "known": self._event_types},
            )

    async def get_webhook(self, request: GetWebhook) -> Webhook:
        row = await self._db.read(lambda conn: store.get_webhook(conn, request.name))
        if row is None:
            raise _no_webhook(request.name)
        return store.webhook_of(row)

    async def list_webhooks(self, request: ListWebhooks) -> Page[Webhook]:
        after = decode_cursor(request.cursor, "webhooks", str)[0] if request.cursor else None
        limit = request.limit
        rows = await self._db.read(
            lambda conn: store.list_webhooks(conn, after=after, limit=limit + 1)
        )
        items = [store.webhook_of(row) for row in rows[:limit]]
        more = len(rows) > limit
        cursor = encode_cursor("webhooks", items[-1].name) if more and items else None
        return Page(items=items, next_cursor=cursor)

    async def delete_webhook(self, request: DeleteWebhook) -> Webhook:
        def delete(conn: Connection) -> Webhook:
            row = store.get_webhook(conn, request.name)
            if row is None:
                raise _no_webhook(request.name)
            store.delete_webhook(conn, request.name)
            return store.webhook_of(row)

        return await self._db.write(delete)

    # --- deliveries ---------------------------------------------------------------------------

    async def list_deliveries(self, request: ListDeliveries) -> Page[Delivery]:
        after = None
        if request.cursor:
            after = decode_cursor(request.cursor, "deliveries", float, str)
        limit = request.limit

        def read(conn: Connection) -> list[Delivery]:
            if store.get_webhook(conn, request.webhook) is None:
                raise _no_webhook(request.webhook)
            return store.list_deliveries(
                conn, request.webhook, status=request.status, after=after, limit=limit + 1
            )

        found = await self._db.read(read)
        items = found[:limit]
        cursor = None
        if len(found) > limit and items:
            cursor = encode_cursor("deliveries", items[-1].created_at, items[-1].id)
        return Page(items=items, next_cursor=cursor)

    async def list_failed_deliveries(self, request: ListFailedDeliveries) -> Page[Delivery]:
        after = None
        if request.cursor:
            after = decode_cursor(request.cursor, "failed-deliveries", float, str)
        limit = request.limit
        found = await self._db.read(
            lambda conn: store.failed_deliveries(conn, after=after, limit=limit + 1)
        )
        items = found[:limit]
        cursor = None
        if len(found) > limit and items:
            cursor = encode_cursor("failed-deliveries", items[-1][0], items[-1][1].id)
        return Page(items=[d for _, d in items], next_cursor=cursor)

    async def redeliver(self, request: Redeliver) -> Delivery:
        def again(conn: Connection) -> Delivery:
            if not store.redeliver(conn, request.webhook, request.id, now=time.time()):
                raise NotFound(
                    f"webhook {request.webhook!r} has no delivery {request.id!r}",
                    details={"webhook": request.webhook, "id": request.id},
                )
            found = store.get_delivery(conn, request.webhook, request.id)
            assert found is not None  # updated just above, in this transaction
            return found

        delivery = await self._db.write(again)
        self.dispatcher.wake()
        return delivery

    # --- events -------------------------------------------------------------------------------

    async def on_event(self, event: Any, meta: EventMeta) -> None:
        """Queue one delivery per webhook whose patterns match the event (once per event id)."""
        hooks = await self._db.read(store.all_webhooks)
        now = time.time()
        rows = [
            {
                "id": str(uuid.uuid4()),
                "webhook": hook.name,
                "event_id": meta.id,
                "event_type": meta.type,
                "body": render(
                    hook.format,
                    event=event,
                    event_id=meta.id,
                    event_type=meta.type,
                    publisher=meta.publisher,
                    created_at=meta.created_at,
                ),
                "status": store.PENDING,
                "attempts": 0,
                "round_attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for hook in hooks
            if any(fnmatch.fnmatchcase(meta.type, pattern) for pattern in hook.events)
        ]
        if not rows:
            return
        if await self._db.write(lambda conn: store.enqueue(conn, rows)):
            self.dispatcher.wake()


def _no_webhook(name: str) -> NotFound:
    return NotFound(f"no webhook named {name!r}", details={"webhook": name})
