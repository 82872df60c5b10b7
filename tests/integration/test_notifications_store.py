"""The deliveries table on SQLite and PostgreSQL: deduplication, leases that lapse, stale
senders ignored, retention."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.kernel.db import Database
from app.modules.notifications import store
from contracts.notifications import Attempt

NOW = 1_000_000.0
LEASE_S = 40.0


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database("notifications", database_url)
    database.migrate("notifications")
    database.write_sync(
        lambda c: store.put_webhook(
            c,
            {
                "name": "ops",
                "url": "http://127.0.0.1:9/",
                "events": ["*"],
                "secret": "s" * 20,
                "format": "json",
            },
            now=NOW,
        )
    )
    yield database
    database.dispose()


def _row(event_id: str, delivery_id: str) -> dict[str, object]:
    return {
        "id": delivery_id,
        "webhook": "ops",
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


def _claim(db: Database, token: str, now: float) -> list[store.Claimed]:
    return db.write_sync(lambda c: store.claim(c, token=token, now=now, lease_s=LEASE_S, limit=10))


def test_an_event_is_queued_once_per_webhook(db: Database) -> None:
    assert db.write_sync(lambda c: store.enqueue(c, [_row("e1", "d1")])) == 1
    assert db.write_sync(lambda c: store.enqueue(c, [_row("e1", "d2"), _row("e2", "d3")])) == 1
    listed = db.read_sync(
        lambda c: store.list_deliveries(c, "ops", status=None, after=None, limit=10)
    )
    assert sorted(d.event_id for d in listed) == ["e1", "e2"]


def test_a_lease_keeps_others_off_until_it_lapses_and_a_stale_sender_writes_nothing(
    db: Database,
) -> None:
    db.write_sync(lambda c: store.enqueue(c, [_row("e1", "d1")]))
    (first,) = _claim(db, "a", NOW)
    assert first.secret == "s" * 20
    assert _claim(db, "b", NOW + 1) == []  # leased to a
    (taken,) = _claim(db, "b", NOW + LEASE_S + 1)  # a died: its lease lapsed
    assert taken.id == first.id

    late = Attempt(number=1, at=NOW, duration_s=0.1, status_code=204)
    db.write_sync(lambda c: store.record(c, first, late, token="a", retry_at=None))
    (still,) = db.read_sync(
        lambda c: store.list_deliveries(c, "ops", status=None, after=None, limit=10)
    )
    assert (still.status, still.attempts) == ("pending", [])

    failed = Attempt(number=1, at=NOW + 41, duration_s=0.1, error="HTTP 503")
    db.write_sync(lambda c: store.record(c, taken, failed, token="b", retry_at=NOW + 50))
    assert _claim(db, "c", NOW + 45) == []  # not due yet
    (again,) = _claim(db, "c", NOW + 50)
    assert (again.attempts, again.round_attempts) == (1, 1)


def test_delivered_ones_are_pruned_after_the_retention_failed_ones_stay(db: Database) -> None:
    db.write_sync(lambda c: store.enqueue(c, [_row("e1", "d1"), _row("e2", "d2")]))
    one, two = sorted(_claim(db, "a", NOW), key=lambda d: d.id)
    ok = Attempt(number=1, at=NOW, duration_s=0.1, status_code=204)
    bad = Attempt(number=1, at=NOW, duration_s=0.1, error="HTTP 500")
    db.write_sync(lambda c: store.record(c, one, ok, token="a", retry_at=None))
    db.write_sync(lambda c: store.record(c, two, bad, token="a", retry_at=None))

    assert db.write_sync(lambda c: store.prune(c, NOW + 10)) == 1
    (left,) = db.read_sync(
        lambda c: store.list_deliveries(c, "ops", status=None, after=None, limit=10)
    )
    assert (left.id, left.status, len(left.attempts)) == ("d2", "failed", 1)
