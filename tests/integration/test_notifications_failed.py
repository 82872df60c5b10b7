"""Failed deliveries of every webhook, the latest failure first, page by page, on SQLite and
PostgreSQL (``list_failed_deliveries``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.kernel.db import Database
from app.modules.notifications import store
from contracts.notifications import Attempt

NOW = 1_000_000.0


def _webhook(name: str) -> dict[str, object]:
    return {
        "name": name,
        "url": "http://127.0.0.1:9/",
        "events": ["*"],
        "secret": "s" * 20,
        "format": "json",
    }


def _row(webhook: str, event_id: str) -> dict[str, object]:
    return {
        "id": f"{webhook}-{event_id}",
        "webhook": webhook,
        "event_id": event_id,
        "event_type": "ModelVersionRegistered",
        "body": b"{}",
        "status": store.PENDING,
        "attempts": 0,
        "round_attempts": 0,
        "next_attempt_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database("notifications", database_url)
    database.migrate("notifications")
    for name in ("ops", "team"):
        hook = _webhook(name)
        database.write_sync(lambda c: store.put_webhook(c, hook, now=NOW))  # noqa: B023
    yield database
    database.dispose()


def _attempt(db: Database, at: float) -> tuple[str, bool]:
    """Claim the next delivery and answer it: only event ``e3`` is delivered."""
    (claimed,) = db.write_sync(lambda c: store.claim(c, token="t", now=at, lease_s=30, limit=1))
    ok = claimed.event_id == "e3"
    attempt = Attempt(
        number=claimed.attempts + 1,
        at=at,
        duration_s=0.1,
        status_code=204 if ok else 500,
        error=None if ok else "HTTP 500",
    )
    db.write_sync(lambda c: store.record(c, claimed, attempt, token="t", retry_at=None))
    return claimed.event_id, ok


def test_failed_deliveries_of_every_webhook_come_latest_failure_first(db: Database) -> None:
    rows = [_row("ops", "e1"), _row("team", "e2"), _row("ops", "e3"), _row("team", "e4")]
    db.write_sync(lambda c: store.enqueue(c, rows))
    answered = [_attempt(db, NOW + 10 * (n + 1)) for n in range(4)]
    failed_first = [event for event, ok in reversed(answered) if not ok]
    assert sorted(failed_first) == ["e1", "e2", "e4"]

    first = db.read_sync(lambda c: store.failed_deliveries(c, after=None, limit=2))
    assert [d.event_id for _, d in first] == failed_first[:2]
    assert {d.webhook for _, d in first} <= {"ops", "team"}
    assert [(d.status, d.attempts[-1].error) for _, d in first] == [("failed", "HTTP 500")] * 2
    after = (first[-1][0], first[-1][1].id)
    rest = db.read_sync(lambda c: store.failed_deliveries(c, after=after, limit=2))
    assert [d.event_id for _, d in rest] == failed_first[2:]
