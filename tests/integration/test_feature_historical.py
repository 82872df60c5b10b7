"""Point-in-time correct reads of the offline store: never a value from the future, TTL, order
(SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.kernel.db import Database
from app.modules.features import store
from app.modules.features.historical import iter_point_in_time, point_in_time
from contracts.features import Value

SECOND = 1_000_000
T0 = 1_700_000_000 * SECOND


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database("features", database_url)
    database.migrate("features")
    yield database
    database.dispose()


def _push(db: Database, view: str, rows: list[tuple[str, int, dict[str, Value]]]) -> None:
    db.write_sync(lambda c: store.write_offline(c, view, rows))


def _pit(
    db: Database, keys: list[tuple[str, int]], *, ttl_us: int = 0, view: str = "users", **kw: int
) -> list[tuple[int, dict[str, Value]] | None]:
    return db.read_sync(lambda c: point_in_time(c, view, ttl_us, keys, **kw))


def test_each_row_gets_the_latest_value_at_or_before_its_timestamp(db: Database) -> None:
    _push(db, "users", [("u=1", T0 + t * SECOND, {"n": t}) for t in (10, 20, 30)])

    found = _pit(db, [("u=1", T0 + t * SECOND) for t in (9, 10, 15, 20, 29, 30, 1000)])

    assert found == [
        None,
        (T0 + 10 * SECOND, {"n": 10}),
        (T0 + 10 * SECOND, {"n": 10}),
        (T0 + 20 * SECOND, {"n": 20}),
        (T0 + 20 * SECOND, {"n": 20}),
        (T0 + 30 * SECOND, {"n": 30}),
        (T0 + 30 * SECOND, {"n": 30}),
    ]


def test_a_value_from_one_microsecond_later_never_leaks(db: Database) -> None:
    _push(db, "users", [("u=1", T0, {"n": 0}), ("u=1", T0 + 1, {"n": 1})])

    assert _pit(db, [("u=1", T0), ("u=1", T0 - 1)]) == [(T0, {"n": 0}), None]


def test_a_late_backfill_is_used_only_where_it_is_the_latest_in_the_past(db: Database) -> None:
    _push(db, "users", [("u=1", T0 + 10 * SECOND, {"n": 10}), ("u=1", T0 + 30 * SECOND, {"n": 30})])
    # arrives after newer rows, with an older event timestamp
    _push(db, "users", [("u=1", T0 + 20 * SECOND, {"n": 20})])

    found = _pit(db, [("u=1", T0 + t * SECOND) for t in (15, 25, 35)])

    assert [f and f[1]["n"] for f in found] == [10, 20, 30]


def test_ttl_leaves_out_values_as_old_as_the_ttl_or_older(db: Database) -> None:
    _push(db, "users", [("u=1", T0, {"n": 0})])
    ttl = 60 * SECOND

    found = _pit(
        db, [("u=1", T0 + 59 * SECOND), ("u=1", T0 + ttl), ("u=1", T0 + 3600 * SECOND)], ttl_us=ttl
    )

    assert found == [(T0, {"n": 0}), None, None]
    assert _pit(db, [("u=1", T0 + 3600 * SECOND)]) == [(T0, {"n": 0})]  # 0: no TTL


def test_a_stale_newest_value_does_not_fall_back_to_an_even_older_one(db: Database) -> None:
    _push(db, "users", [("u=1", T0, {"n": 0}), ("u=1", T0 + 100 * SECOND, {"n": 100})])

    found = _pit(db, [("u=1", T0 + 200 * SECOND), ("u=1", T0 + 150 * SECOND)], ttl_us=60 * SECOND)

    assert found == [None, (T0 + 100 * SECOND, {"n": 100})]


def test_request_order_duplicates_and_unknown_entities(db: Database) -> None:
    _push(
        db, "users", [(f"u={i}", T0 + i, {"n": i, "x": [0.5, 1.0], "b": False}) for i in range(5)]
    )
    _push(db, "items", [("u=3", T0, {"n": -1})])  # another view's rows are never read
    keys = [("u=3", T0 + 10), ("u=0", T0 + 10), ("u=404", T0 + 10), ("u=3", T0 + 10), ("u=3", T0)]

    found = _pit(db, keys)

    assert found == [
        (T0 + 3, {"n": 3, "x": [0.5, 1.0], "b": False}),
        (T0, {"n": 0, "x": [0.5, 1.0], "b": False}),
        None,
        (T0 + 3, {"n": 3, "x": [0.5, 1.0], "b": False}),
        None,
    ]
    assert _pit(db, []) == []
    assert _pit(db, [("u=3", T0 + 10)], view="nothing") == [None]


def test_chunks_come_in_order_and_answer_the_same_as_one_query(db: Database) -> None:
    _push(db, "users", [(f"u={i % 7}", T0 + i * SECOND, {"i": i}) for i in range(100)])
    keys = [(f"u={i % 9}", T0 + (i * 37 % 100) * SECOND) for i in range(50)]

    whole = _pit(db, keys)
    chunks = db.read_sync(lambda c: list(iter_point_in_time(c, "users", 0, keys, chunk_rows=8)))

    assert [len(chunk) for chunk in chunks] == [8] * 6 + [2]
    assert [row for chunk in chunks for row in chunk] == whole
    assert _pit(db, keys, chunk_rows=3) == whole
    for (entity_key, ts), row in zip(keys, whole, strict=True):
        i = int(entity_key.split("=")[1])
        if i >= 7 or ts < T0 + i * SECOND:
            assert row is None
        else:
            assert row is not None
            assert row[0] <= ts
            assert row[0] > ts - 7 * SECOND
