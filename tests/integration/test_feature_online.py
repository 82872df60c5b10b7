"""The online stores, embedded (SQLite, PostgreSQL) and Redis: newest wins, exact values, order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from app.kernel.db import Database
from app.modules.features.online import (
    OnlineStore,
    RedisOnlineStore,
    SqlOnlineStore,
    open_online_store,
)
from tests.conftest import REDIS_URL

T0 = 1_700_000_000_000_000


@pytest.fixture(params=["sql-sqlite", "sql-postgres", "redis"])
async def online(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OnlineStore]:
    if request.param == "sql-postgres":
        url = str(request.getfixturevalue("postgres_schema_url"))
    else:
        url = f"sqlite:///{tmp_path / 'features.db'}"
    db = Database("features", url)
    db.migrate("features")
    if request.param == "redis":
        prefix = f"{request.getfixturevalue('redis_namespace')}:"
        found = open_online_store(REDIS_URL, db, prefix)
    else:
        found = open_online_store(None if request.param == "sql-sqlite" else url, db, "")
    yield found
    await found.close()
    db.dispose()


async def test_a_newer_event_replaces_and_an_older_one_is_ignored(online: OnlineStore) -> None:
    assert await online.write("users", [("u=1", T0 + 10, {"n": 10})]) == 1
    assert await online.write("users", [("u=1", T0 + 20, {"n": 20})]) == 1
    assert await online.write("users", [("u=1", T0 + 5, {"n": 5})]) == 0

    assert await online.read(["users"], ["u=1"]) == [{"users": (T0 + 20, {"n": 20})}]


async def test_an_equal_timestamp_replaces(online: OnlineStore) -> None:
    await online.write("users", [("u=1", T0, {"n": 1})])

    assert await online.write("users", [("u=1", T0, {"n": 2})]) == 1
    assert await online.write("users", [("u=1", T0, {"n": 2})]) == 0  # the same again: no change
    assert await online.read(["users"], ["u=1"]) == [{"users": (T0, {"n": 2})}]


async def test_the_newest_of_one_entitys_rows_in_a_batch_is_kept(online: OnlineStore) -> None:
    rows = [
        ("u=1", T0 + 3, {"n": 3}),
        ("u=1", T0 + 9, {"n": 9}),
        ("u=2", T0 + 1, {"n": 1}),
        ("u=1", T0 + 2, {"n": 2}),
        ("u=2", T0 + 1, {"n": 11}),  # as new as the earlier one: the later row wins
    ]

    assert await online.write("users", rows) == 2
    assert await online.read(["users"], ["u=1", "u=2"]) == [
        {"users": (T0 + 9, {"n": 9})},
        {"users": (T0 + 1, {"n": 11})},
    ]


async def test_reads_answer_in_request_order_with_missing_entities_empty(
    online: OnlineStore,
) -> None:
    await online.write("users", [(f"u={i}", T0 + i, {"n": i}) for i in range(1200)])

    keys = ["u=1100", "u=nobody", "u=3", "u=1100", "u=0"]
    found = await online.read(["users"], keys)

    assert found == [
        {"users": (T0 + 1100, {"n": 1100})},
        {},
        {"users": (T0 + 3, {"n": 3})},
        {"users": (T0 + 1100, {"n": 1100})},
        {"users": (T0, {"n": 0})},
    ]
    everyone = await online.read(["users"], [f"u={i}" for i in range(1200)])
    assert everyone == [{"users": (T0 + i, {"n": i})} for i in range(1200)]
    assert await online.read(["users"], []) == []
    assert await online.read([], ["u=1"]) == [{}]


async def test_one_entity_holds_several_views(online: OnlineStore) -> None:
    await online.write("users", [("u=1", T0, {"clicks": 3}), ("u=2", T0, {"clicks": 4})])
    await online.write("risk", [("u=1", T0 + 7, {"score": 0.25})])

    found = await online.read(["users", "risk", "absent"], ["u=1", "u=2"])

    assert found == [
        {"users": (T0, {"clicks": 3}), "risk": (T0 + 7, {"score": 0.25})},
        {"users": (T0, {"clicks": 4})},
    ]
    assert await online.read(["risk"], ["u=2"]) == [{}]


async def test_values_round_trip_exactly(online: OnlineStore) -> None:
    values = {
        "int": 7,
        "big": 2**53 + 1,
        "negative": -3,
        "float": 1.0,
        "small": 1e-300,
        "true": True,
        "false": False,
        "text": 'héllo "quoted" | = :',
        "vector": [0.1, 2.0, -3.5],
        "none": None,
    }
    await online.write("users", [('u=1|c="fr"', T0, values)])

    [found] = await online.read(["users"], ['u=1|c="fr"'])
    [again, _] = await online.read(["users"], ['u=1|c="fr"', "u=2"])  # a batch reads the same
    _, got = found["users"]

    assert got == values
    assert again == found
    assert {name: type(value) for name, value in got.items()} == {
        name: type(value) for name, value in values.items()
    }
    assert [type(x) for x in got["vector"]] == [float, float, float]


def test_urls_choose_the_backend(tmp_path: Path) -> None:
    db = Database("features", f"sqlite:///{tmp_path / 'f.db'}")
    try:
        assert isinstance(open_online_store(None, db, ""), SqlOnlineStore)
        assert isinstance(open_online_store(db.url, db, ""), SqlOnlineStore)
        assert isinstance(open_online_store("postgresql://h/db", db, ""), SqlOnlineStore)
        assert isinstance(open_online_store("redis://127.0.0.1:6379", db, "q:"), RedisOnlineStore)
        with pytest.raises(ValueError, match="ftp"):
            open_online_store("ftp://somewhere", db, "")
    finally:
        db.dispose()


async def test_redis_keeps_one_hash_per_entity_under_the_prefix(redis_namespace: str) -> None:
    prefix = f"{redis_namespace}:"
    online = RedisOnlineStore(REDIS_URL, prefix)
    try:
        await online.write("users", [("u=1", T0, {"n": 1})])
        await online.write("risk", [("u=1", T0 + 1, {"s": 0.5})])
    finally:
        await online.close()

    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert [k.decode() for k in client.scan_iter(match=f"{prefix}*")] == [
            f"{prefix}features:u=1"
        ]
        stored = client.hgetall(f"{prefix}features:u=1")
    finally:
        client.close()
    assert sorted(stored) == [b"t:risk", b"t:users", b"v:risk", b"v:users"]
    assert stored[b"t:users"] == str(T0).encode()
