"""A receiver down for more than a minute of the dispatcher's clock (its port closed: every
connection refused) gets every delivery once it is back, and none twice.

The dispatcher and the sender read the time through their modules' ``time``; the test swaps in
a clock it moves forward itself, to each delivery's next attempt, instead of waiting a minute.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.bootstrap import Platform
from app.modules.notifications import dispatcher, sender
from app.modules.notifications.settings import NotificationsSettings
from contracts.notifications import Delivery, PutWebhook
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx
from tests.fakes.server import free_port
from tests.integration.test_notifications import (
    SECRET,
    Receiver,
    _deliveries,
    _settings,
    eventually,
    verify,
)

OUTAGE_S = 60.0
PATIENT = NotificationsSettings(
    webhook_hosts=("127.0.0.1/32",),
    retry_base_s=1.0,
    retry_cap_s=8.0,
    max_attempts=40,  # about five minutes of retries: the outage does not exhaust them
    timeout_s=5.0,
)


class DrivenClock:
    """The wall and monotonic clocks, plus an offset only the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def move_to(self, moment: float) -> None:
        self.offset += max(0.0, moment - self.time())


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> DrivenClock:
    driven = DrivenClock()
    monkeypatch.setattr(dispatcher, "time", driven)
    monkeypatch.setattr(sender, "time", driven)
    return driven


@pytest.fixture
async def platform(tmp_path: Path, clock: DrivenClock) -> AsyncIterator[Platform]:
    async with Platform(_settings(tmp_path, PATIENT)) as started:
        yield started


async def _waiting(platform: Platform, clock: DrivenClock, count: int) -> list[Delivery]:
    """The deliveries once each of the ``count`` was tried and waits for a later attempt."""
    found: list[Delivery] = []

    async def check() -> bool:
        found[:] = await _deliveries(platform, "ops")
        return len(found) == count and all(
            d.status == "pending"
            and d.attempts
            and d.next_attempt_at is not None
            and d.next_attempt_at > clock.time()
            for d in found
        )

    await eventually(check)
    return found


async def test_a_receiver_down_for_a_minute_gets_every_delivery_once_when_back(
    platform: Platform, clock: DrivenClock
) -> None:
    down = Receiver(port=free_port())  # nothing listens there yet: connections are refused
    notifications = platform.client("notifications", caller="tests")
    await notifications.put_webhook(
        PutWebhook(name="ops", url=down.url, events=["ModelVersionRegistered"], secret=SECRET)
    )
    registry = platform.client("registry", caller="tests")
    for name in ("churn", "fraud", "upsell"):
        await registry.register_version(RegisterVersion(name=name, artifact=linear_onnx()))
    wake = platform.built["notifications"].service.dispatcher.wake

    went_down = clock.time()
    waiting = await _waiting(platform, clock, count=3)
    while clock.time() - went_down < OUTAGE_S:
        clock.move_to(min(d.next_attempt_at or 0.0 for d in waiting) + 0.01)
        wake()
        waiting = await _waiting(platform, clock, count=3)
    for delivery in waiting:
        assert all(a.status_code is None and a.error for a in delivery.attempts)
        assert delivery.attempts[-1].at - delivery.attempts[0].at >= OUTAGE_S - 8.0 * 1.25
        assert len(delivery.attempts) >= 8

    await down.start()
    try:
        clock.move_to(max(d.next_attempt_at or 0.0 for d in waiting) + 0.01)
        wake()

        async def delivered() -> bool:
            items = await _deliveries(platform, "ops")
            return len(items) == 3 and all(d.status == "delivered" for d in items)

        await eventually(delivered)
        arrived = [down.arrived.get_nowait() for _ in range(down.arrived.qsize())]
        events = sorted(got.json()["id"] for got in arrived)
        assert events == sorted(d.event_id for d in waiting)  # each event, once
        assert all(verify(SECRET, got.headers["quarry-signature"], got.body) for got in arrived)

        clock.move_to(clock.time() + 600)  # long after: nothing is due again
        wake()
        for delivery in await _deliveries(platform, "ops"):
            assert delivery.status == "delivered"
            assert delivery.attempts[-1].status_code == 204
            assert [a.number for a in delivery.attempts] == list(
                range(1, len(delivery.attempts) + 1)
            )
    finally:
        await down.stop()
