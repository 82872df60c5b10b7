"""Singleton loops: one lease holder among replicas, on PostgreSQL, Redis and SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from app.kernel.db import Database
from app.kernel.settings import Settings
from app.kernel.singleton import (
    FileLease,
    Lease,
    LocalLease,
    PostgresLease,
    RedisLease,
    lease,
    run_as_singleton,
)
from tests.conftest import REDIS_URL

LOOP = "demo.loop"


async def wait_until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if await condition():
            return
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def released(*leases: Lease) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for held in leases:
            await held.release()


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def pg(postgres_schema_url: str) -> Iterator[Database]:
    db = Database("demo", postgres_schema_url)
    yield db
    db.dispose()


async def test_one_postgres_lease_holds_and_release_hands_it_over(pg: Database) -> None:
    first, second = PostgresLease(LOOP, pg.engine), PostgresLease(LOOP, pg.engine)
    async with released(first, second):
        assert await first.hold()
        assert not await second.hold()
        assert await first.hold()  # keeping it is a no-op

        await first.release()

        assert await second.hold()
        assert not await first.hold()


async def test_a_lost_holder_connection_frees_the_postgres_lease(pg: Database) -> None:
    first, second = PostgresLease(LOOP, pg.engine), PostgresLease(LOOP, pg.engine)
    async with released(first, second):
        assert await first.hold()
        assert not await second.hold()

        def terminate_the_holder(conn: sa.Connection) -> int:
            return len(
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks"
                        " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                        " AND database = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    )
                ).all()
            )

        assert await pg.write(terminate_the_holder) == 1

        # pg_terminate_backend only signals: the lock goes when that backend has exited
        await wait_until(second.hold)
        assert not await first.hold()  # the holder notices it lost the lease


async def test_leases_of_other_loops_and_schemas_do_not_compete(
    pg: Database, postgres_database: str
) -> None:
    other_schema = Database("demo", postgres_database)  # the public schema
    leases = [
        PostgresLease(LOOP, pg.engine),
        PostgresLease("demo.other", pg.engine),
        PostgresLease(LOOP, other_schema.engine),
    ]
    try:
        async with released(*leases):
            assert [await held.hold() for held in leases] == [True, True, True]
    finally:
        other_schema.dispose()


async def test_only_the_leader_runs_rounds_and_a_standby_takes_over(pg: Database) -> None:
    rounds = {"a": 0, "b": 0}

    def counting(name: str) -> Callable[[], Awaitable[None]]:
        async def body() -> None:
            rounds[name] += 1

        return body

    runners = {
        name: asyncio.create_task(
            run_as_singleton(
                PostgresLease(LOOP, pg.engine), counting(name), interval_s=0.05, check_s=0.05
            )
        )
        for name in rounds
    }
    try:

        async def some_rounds_ran() -> bool:
            return sum(rounds.values()) >= 5

        await wait_until(some_rounds_ran)
        leader = next(name for name, count in rounds.items() if count)
        standby = next(name for name in rounds if name != leader)
        assert rounds[standby] == 0
        assert leader_gauge(LOOP) == 1

        runners[leader].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runners[leader]

        async def standby_runs() -> bool:
            return rounds[standby] >= 3

        await wait_until(standby_runs)
    finally:
        for task in runners.values():
            task.cancel()
        await asyncio.gather(*runners.values(), return_exceptions=True)
    assert leader_gauge(LOOP) == 0


def leader_gauge(loop: str) -> float | None:
    return REGISTRY.get_sample_value("quarry_singleton_leader", {"loop": loop})


async def test_a_failing_round_does_not_stop_the_loop(pg: Database) -> None:
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    task = asyncio.create_task(
        run_as_singleton(PostgresLease(LOOP, pg.engine), body, interval_s=0.02, check_s=0.02)
    )
    try:

        async def failed_twice() -> bool:
            return calls >= 2

        await wait_until(failed_twice)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --- Redis ------------------------------------------------------------------------------------


async def test_a_renewed_redis_lease_outlives_its_ttl_and_release_hands_it_over(
    redis_namespace: str,
) -> None:
    key = f"{redis_namespace}:lock:{LOOP}"
    first = RedisLease(LOOP, url=REDIS_URL, key=key, ttl_s=1.0)
    second = RedisLease(LOOP, url=REDIS_URL, key=key, ttl_s=1.0)
    async with released(first, second):
        assert await first.hold()
        await asyncio.sleep(2.5)  # over two lifetimes: only renewals keep it
        assert first.held
        assert not await second.hold()

        await first.release()

        assert await second.hold()


async def test_a_dead_redis_holder_is_replaced_once_its_lease_expires(
    redis_namespace: str,
) -> None:
    import redis.asyncio

    key = f"{redis_namespace}:lock:{LOOP}"
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        # a holder that took the lease for 300 ms and died: nobody renews it
        assert await client.set(key, "dead-holder", nx=True, px=300)
        survivor = RedisLease(LOOP, url=REDIS_URL, key=key, ttl_s=0.3)
        async with released(survivor):
            assert not await survivor.hold()

            async def taken_over() -> bool:
                return await survivor.hold()

            await wait_until(taken_over, within=5)
            assert await client.get(key) != b"dead-holder"

            # someone else's lease replacing ours is noticed at the next renewal
            await client.set(key, "intruder", px=5000)

            async def lost() -> bool:
                return not survivor.held

            await wait_until(lost, within=5)
        assert await client.get(key) == b"intruder"  # releasing a lost lease leaves it alone
    finally:
        await client.aclose()


# --- SQLite and the choice of backend --------------------------------------------------------


async def test_a_file_lease_is_held_by_one_holder_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "module.db.demo.loop.lock"
    first, second = FileLease(LOOP, path), FileLease(LOOP, path)
    async with released(first, second):
        assert await first.hold()
        assert not await second.hold()
        await first.release()
        assert await second.hold()


async def test_the_backend_follows_the_database_unless_redis_locks_are_set(
    tmp_path: Path, postgres_schema_url: str
) -> None:
    settings = Settings(data_dir=tmp_path)
    sqlite = Database("demo", f"sqlite:///{tmp_path / 'demo.db'}")
    memory = Database("demo", "sqlite:///:memory:")
    postgres = Database("demo", postgres_schema_url)
    try:
        assert isinstance(lease(LOOP, db=sqlite, settings=settings), FileLease)
        assert isinstance(lease(LOOP, db=memory, settings=settings), LocalLease)
        assert isinstance(lease(LOOP, db=postgres, settings=settings), PostgresLease)
        on_redis = settings.replace(locks_url=REDIS_URL, redis_prefix="p:")
        chosen = lease(LOOP, db=postgres, settings=on_redis)
        assert isinstance(chosen, RedisLease)
        assert chosen.key == f"p:lock:{LOOP}"
    finally:
        for db in (sqlite, memory, postgres):
            db.dispose()
