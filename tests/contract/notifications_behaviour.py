"""What every implementation of ``NotificationsService`` must do, whatever the transport.

Subclasses provide a ``notifications`` fixture whose module allows webhooks to 127.0.0.1. Names
carry a random suffix so that one server can serve every test of a class.
"""

from __future__ import annotations

import uuid

import pytest

from contracts.common import InvalidInput, NotFound
from contracts.notifications import (
    DeleteWebhook,
    GetWebhook,
    ListDeliveries,
    ListFailedDeliveries,
    ListWebhooks,
    NotificationsService,
    PutWebhook,
    Redeliver,
)

URL = "http://127.0.0.1:9/hook"
SECRET = "a-secret-of-some-length"


def _name(prefix: str = "hook") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class NotificationsBehaviour:
    async def test_a_webhook_is_put_read_listed_and_deleted(
        self, notifications: NotificationsService
    ) -> None:
        name = _name()
        made = await notifications.put_webhook(
            PutWebhook(name=name, url=URL, events=["ModelAliasChanged", "Drift*"], secret=SECRET)
        )
        assert (made.name, made.url, made.format) == (name, URL, "json")
        assert made.events == ["ModelAliasChanged", "Drift*"]
        assert made.secret is None  # a secret given is never answered back

        read = await notifications.get_webhook(GetWebhook(name=name))
        assert read == made
        listed = await notifications.list_webhooks(ListWebhooks(limit=200))
        assert name in [w.name for w in listed.items]
        page = await notifications.list_deliveries(ListDeliveries(webhook=name))
        assert page.items == []

        gone = await notifications.delete_webhook(DeleteWebhook(name=name))
        assert gone.name == name
        with pytest.raises(NotFound):
            await notifications.get_webhook(GetWebhook(name=name))
        with pytest.raises(NotFound):
            await notifications.delete_webhook(DeleteWebhook(name=name))

    async def test_a_generated_secret_is_answered_by_the_put_that_made_it_only(
        self, notifications: NotificationsService
    ) -> None:
        name = _name()
        made = await notifications.put_webhook(PutWebhook(name=name, url=URL, events=["*"]))
        assert made.secret is not None
        replaced = await notifications.put_webhook(
            PutWebhook(name=name, url=URL, events=["Model*"], format="slack")
        )
        assert replaced.secret is None
        assert (replaced.events, replaced.format) == (["Model*"], "slack")
        assert replaced.created_at == made.created_at
        assert (await notifications.get_webhook(GetWebhook(name=name))).secret is None

    async def test_webhooks_page_by_name(self, notifications: NotificationsService) -> None:
        prefix = _name("paged")
        for i in range(3):
            await notifications.put_webhook(PutWebhook(name=f"{prefix}-{i}", url=URL, events=["*"]))
        seen: list[str] = []
        cursor = None
        while True:
            page = await notifications.list_webhooks(ListWebhooks(limit=2, cursor=cursor))
            seen += [w.name for w in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [n for n in seen if n.startswith(prefix)] == [f"{prefix}-{i}" for i in range(3)]
        assert seen == sorted(seen)

    async def test_refused_urls_and_events(self, notifications: NotificationsService) -> None:
        for url in ("http://10.0.0.1/", "http://169.254.169.254/", "gopher://127.0.0.1/"):
            with pytest.raises(InvalidInput):
                await notifications.put_webhook(PutWebhook(name=_name(), url=url, events=["*"]))
        with pytest.raises(InvalidInput, match="unknown event type"):
            await notifications.put_webhook(PutWebhook(name=_name(), url=URL, events=["Nope"]))
        with pytest.raises(InvalidInput, match="matches no event type"):
            await notifications.put_webhook(PutWebhook(name=_name(), url=URL, events=["Nope*"]))

    async def test_unknown_webhooks_and_deliveries_are_not_found(
        self, notifications: NotificationsService
    ) -> None:
        with pytest.raises(NotFound):
            await notifications.list_deliveries(ListDeliveries(webhook=_name()))
        name = _name()
        await notifications.put_webhook(PutWebhook(name=name, url=URL, events=["*"]))
        with pytest.raises(NotFound):
            await notifications.redeliver(Redeliver(webhook=name, id=str(uuid.uuid4())))

    async def test_failed_deliveries_of_every_webhook_are_listed(
        self, notifications: NotificationsService
    ) -> None:
        name = _name()
        await notifications.put_webhook(PutWebhook(name=name, url=URL, events=["*"]))
        page = await notifications.list_failed_deliveries(ListFailedDeliveries(limit=5))
        assert len(page.items) <= 5
        assert all(d.status == "failed" for d in page.items)
        with pytest.raises(InvalidInput):
            await notifications.list_failed_deliveries(ListFailedDeliveries(cursor="not-a-cursor"))
