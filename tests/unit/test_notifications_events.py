"""Webhooks can ask for every event a module publishes: the notifications module subscribes to
each of them, so a newly published event cannot be forgotten there."""

from __future__ import annotations

from app.bootstrap import AVAILABLE_MODULES
from app.modules import notifications


def test_notifications_subscribes_to_every_published_event() -> None:
    published = {t for spec in AVAILABLE_MODULES for t in spec.publishes}
    assert set(notifications.module.subscribes) == published
