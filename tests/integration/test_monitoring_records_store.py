"""Prediction records stored on SQLite and PostgreSQL: every field kept, a record already stored
(or repeated in one batch) stored once and not counted again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pytest

from app.kernel.db import Database
from app.kernel.ids import ordered_id
from app.modules.monitoring import store
from contracts.common import Tensor
from contracts.inference import PredictionRecord

AT = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database("monitoring", database_url)
    database.migrate("monitoring")
    yield database
    database.dispose()


def _record(prediction_id: str, **fields: Any) -> PredictionRecord:
    base = PredictionRecord(
        prediction_id=prediction_id, model="churn", version=3, status="ok", latency_s=0.004, at=AT
    )
    return msgspec.structs.replace(base, **fields)


def _insert(db: Database, records: list[PredictionRecord]) -> int:
    return db.write_sync(lambda c: store.insert_records(c, records))


def test_every_field_is_stored(db: Database) -> None:
    outputs = {"y": Tensor.from_numpy(np.array([[0.25, 0.75]], dtype=np.float32))}
    inputs = {"x": Tensor.from_numpy(np.arange(4, dtype=np.int64).reshape(1, 4))}
    failed = _record(ordered_id(), status="unavailable", version=None, deployment="live")
    served = _record(ordered_id(), outputs=outputs, inputs=inputs, deployment="live")

    assert _insert(db, [failed, served]) == 2

    since, until = AT.timestamp() - 1, AT.timestamp() + 1
    logged = db.read_sync(lambda c: store.logged(c, "churn", None, since, until, limit=10))
    by_id = {row.prediction_id: row for row in logged}
    assert by_id[served.prediction_id].outputs == outputs
    assert by_id[served.prediction_id].inputs == inputs
    latencies = db.read_sync(lambda c: store.latencies(c, "churn", None, since, until))
    assert sorted(status for _, _, status in latencies) == ["ok", "unavailable"]
    assert all(latency == pytest.approx(0.004) for _, latency, _ in latencies)


def test_a_record_already_stored_is_stored_once(db: Database) -> None:
    first = [_record(ordered_id()) for _ in range(3)]
    again = _record(first[1].prediction_id, status="internal")
    fresh = _record(ordered_id())

    assert _insert(db, first) == 3
    assert _insert(db, [again, fresh, fresh]) == 1

    since, until = AT.timestamp() - 1, AT.timestamp() + 1
    latencies = db.read_sync(lambda c: store.latencies(c, "churn", None, since, until))
    assert [status for _, _, status in latencies] == ["ok"] * 4


def test_nothing_to_store_is_nothing_stored(db: Database) -> None:
    assert _insert(db, []) == 0


def test_a_large_batch_is_stored_whole_and_repeats_within_it_once(db: Database) -> None:
    batch = [_record(ordered_id(), version=i % 3) for i in range(250)]
    batch.append(batch[7])  # repeated in a later part of the same batch

    assert _insert(db, batch) == 250
    assert _insert(db, batch[100:]) == 0

    since, until = AT.timestamp() - 1, AT.timestamp() + 1
    stored = db.read_sync(lambda c: store.logged(c, "churn", None, since, until, limit=1000))
    assert sorted(r.prediction_id for r in stored) == sorted(r.prediction_id for r in batch[:250])
    assert {r.version for r in stored} == {0, 1, 2}
