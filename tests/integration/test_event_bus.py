"""The in-process event relay: at-least-once delivery from an outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import msgspec
import pytest
from sqlalchemy.engine import Connection

from app.kernel.db import Database
from app.kernel.events import (
    EventBus,
    EventMeta,
    Outbox,
    list_events,
    list_failed,
    outbox_tables,
    prune,
    retry_failed,
)

MODULE = "demo"
RETRY_BASE_S = 0.01


class ThingHappened(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    n: int


class NobodyListens(msgspec.Struct, frozen=True, kw_only=True, tag="demo.nobody"):
    pass


@dataclass
class Subscriber:
    """Records every call; raises while ``failing`` is set."""

    failing: bool = False
    calls: list[tuple[ThingHappened, EventMeta]] = field(default_factory=list)
    called_at: list[float] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: ThingHappened, meta: EventMeta) -> None:
        self.calls.append((event, meta))
        self.called_at.append(time.time())
        self.called.set()
        if self.failing:
            raise RuntimeError(f"down on attempt {meta.attempt}")

    def ids(self) -> list[str]:
        return [meta.id for _, meta in self.calls]


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(MODULE, database_url)
    outbox_tables(MODULE)[0].metadata.create_all(database.engine)
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def outbox() -> Outbox:
    return Outbox(MODULE, (ThingHappened, NobodyListens))


BusFactory = Callable[..., EventBus]


@pytest.fixture
async def make_bus(db: Database, outbox: Outbox) -> AsyncIterator[BusFactory]:
    """Buses relaying ``outbox``, stopped at the end of the test."""
    made: list[EventBus] = []

    def factory(*, outbox: Outbox = outbox, **overrides: float) -> EventBus:
        options = {
            "max_attempts": 3,
            "retry_base_s": RETRY_BASE_S,
            "poll_s": 0.05,
            "retention_s": 3600.0,
        } | overrides
        bus = EventBus(
            max_attempts=int(options["max_attempts"]),
            retry_base_s=options["retry_base_s"],
            poll_s=options["poll_s"],
            retention_s=options["retention_s"],
        )
        bus.add_publisher(MODULE, db, outbox)
        made.append(bus)
        return bus

    yield factory
    for bus in made:
        await bus.stop()


async def publish(db: Database, outbox: Outbox, *events: msgspec.Struct) -> list[str]:
    return await db.write(lambda conn: [outbox.add(conn, e) for e in events])


def statuses(db: Database) -> dict[tuple[str, str], str]:
    return {
        (event.id, d.subscriber): d.status
        for event in list_events(db, MODULE)
        for d in event.deliveries
    }


async def test_every_subscriber_gets_every_event_once(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus()
    first, second = Subscriber(), Subscriber()
    bus.subscribe("first", ThingHappened, first)
    bus.subscribe("second", ThingHappened, second)
    await bus.start()

    ids = await publish(db, outbox, ThingHappened(n=1), ThingHappened(n=2), NobodyListens())
    await bus.drain(timeout=10)

    for subscriber in (first, second):
        assert [event.n for event, _ in subscriber.calls] == [1, 2]
        assert subscriber.ids() == ids[:2]
        assert {(m.publisher, m.type, m.attempt) for _, m in subscriber.calls} == {
            (MODULE, "ThingHappened", 1)
        }
    assert bus.subscribers_of("ThingHappened") == ["first", "second"]
    assert set(statuses(db).values()) == {"completed"}
    assert list_failed(db, MODULE) == []


async def test_a_failing_subscriber_is_retried_with_backoff_then_failed(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus(max_attempts=3)
    healthy, broken = Subscriber(), Subscriber(failing=True)
    bus.subscribe("healthy", ThingHappened, healthy)
    bus.subscribe("broken", ThingHappened, broken)
    await bus.start()

    [event_id] = await publish(db, outbox, ThingHappened(n=7))
    await bus.drain(timeout=10)

    assert healthy.ids() == [event_id]
    assert broken.ids() == [event_id] * 3
    assert [meta.attempt for _, meta in broken.calls] == [1, 2, 3]
    gaps = [b - a for a, b in zip(broken.called_at, broken.called_at[1:], strict=False)]
    assert gaps[0] >= RETRY_BASE_S
    assert gaps[1] >= 2 * RETRY_BASE_S
    [failed] = list_failed(db, MODULE)
    assert (failed.event_id, failed.type, failed.subscriber, failed.attempts) == (
        event_id,
        "ThingHappened",
        "broken",
        3,
    )
    assert failed.last_error == "down on attempt 3"
    assert statuses(db) == {(event_id, "healthy"): "completed", (event_id, "broken"): "failed"}


async def test_a_resubmitted_failure_is_delivered_exactly_once_more(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus(max_attempts=2)
    healthy, broken = Subscriber(), Subscriber(failing=True)
    bus.subscribe("healthy", ThingHappened, healthy)
    bus.subscribe("broken", ThingHappened, broken)
    await bus.start()
    [event_id] = await publish(db, outbox, ThingHappened(n=1))
    await bus.drain(timeout=10)
    assert len(broken.calls) == 2

    broken.failing = False
    assert retry_failed(db, MODULE, event_id="no-such-event") == 0
    assert retry_failed(db, MODULE, subscriber="healthy") == 0
    assert retry_failed(db, MODULE, event_id=event_id, subscriber="broken") == 1
    await bus.drain(timeout=10)

    assert broken.ids() == [event_id] * 3
    assert broken.calls[-1][1].attempt == 1
    assert healthy.ids() == [event_id]
    assert list_failed(db, MODULE) == []
    assert retry_failed(db, MODULE) == 0


async def test_an_event_whose_transaction_rolls_back_is_never_delivered(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus()
    subscriber = Subscriber()
    bus.subscribe("listener", ThingHappened, subscriber)
    await bus.start()

    def add_then_fail(conn: Connection) -> None:
        outbox.add(conn, ThingHappened(n=1))
        raise LookupError("the state change failed")

    with pytest.raises(LookupError):
        await db.write(add_then_fail)
    [kept] = await publish(db, outbox, ThingHappened(n=2))
    await bus.drain(timeout=10)

    assert [(event.n, meta.id) for event, meta in subscriber.calls] == [(2, kept)]
    assert [event.id for event in list_events(db, MODULE)] == [kept]


async def test_a_commit_wakes_the_relay_even_after_a_rollback(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus(poll_s=60.0)  # only the commit notification can wake it in time
    subscriber = Subscriber()
    bus.subscribe("listener", ThingHappened, subscriber)
    await bus.start()
    await bus.drain(timeout=10)  # the relay has looked once and sleeps

    def add_then_fail(conn: Connection) -> None:
        outbox.add(conn, ThingHappened(n=1))
        raise LookupError("rolled back")

    with pytest.raises(LookupError):
        await db.write(add_then_fail)
    await publish(db, outbox, ThingHappened(n=2))
    async with asyncio.timeout(10):
        await subscriber.called.wait()

    assert [event.n for event, _ in subscriber.calls] == [2]


async def test_events_written_while_the_bus_is_stopped_are_delivered_after_start(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus()
    subscriber = Subscriber()
    bus.subscribe("listener", ThingHappened, subscriber)
    before = await publish(db, outbox, ThingHappened(n=1))
    assert subscriber.calls == []

    await bus.start()
    await bus.drain(timeout=10)
    assert subscriber.ids() == before

    await bus.stop()
    while_stopped = await publish(db, outbox, ThingHappened(n=2))
    with pytest.raises(RuntimeError):
        await bus.drain(timeout=1)
    assert subscriber.ids() == before

    await bus.start()
    await bus.drain(timeout=10)
    assert subscriber.ids() == before + while_stopped


async def test_completed_events_are_pruned_after_retention_and_failures_are_kept(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus(retention_s=1e-6, max_attempts=1)
    healthy, broken = Subscriber(), Subscriber(failing=True)
    bus.subscribe("healthy", ThingHappened, healthy)
    await bus.start()
    await publish(db, outbox, ThingHappened(n=1), NobodyListens())
    await bus.drain(timeout=10)  # its last pass began after the deliveries completed
    assert len(healthy.calls) == 1
    assert list_events(db, MODULE) == []

    await bus.stop()
    bus = make_bus(retention_s=1e-6, max_attempts=1)
    bus.subscribe("broken", ThingHappened, broken)
    await bus.start()
    [kept] = await publish(db, outbox, ThingHappened(n=2))
    await bus.drain(timeout=10)
    assert [(e.id, [d.status for d in e.deliveries]) for e in list_events(db, MODULE)] == [
        (kept, ["failed"])
    ]


async def test_prune_keeps_what_is_younger_than_the_retention(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus()
    bus.subscribe("listener", ThingHappened, Subscriber())
    await bus.start()
    [event_id] = await publish(db, outbox, ThingHappened(n=1))
    await bus.drain(timeout=10)

    assert prune(db, MODULE, retention_s=3600) == 0
    assert [e.id for e in list_events(db, MODULE)] == [event_id]
    assert prune(db, MODULE, retention_s=3600, now=time.time() + 7200) == 1
    assert list_events(db, MODULE) == []


async def test_replicas_sharing_a_database_deliver_each_event_once(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    seen: list[str] = []

    async def handler(_event: ThingHappened, meta: EventMeta) -> None:
        seen.append(meta.id)
        await asyncio.sleep(0)  # let the other replica run in between

    replicas = [make_bus(), make_bus(outbox=Outbox(MODULE, (ThingHappened,)))]
    for replica in replicas:
        replica.subscribe("listener", ThingHappened, handler)
        await replica.start()
    ids = await publish(db, outbox, *(ThingHappened(n=n) for n in range(30)))
    await asyncio.gather(*(replica.drain(timeout=10) for replica in replicas))

    assert sorted(seen) == sorted(ids)


async def test_stop_lets_the_handler_in_flight_finish(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus()
    entered, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def slow(_event: ThingHappened, meta: EventMeta) -> None:
        entered.set()
        await release.wait()
        finished.append(meta.id)

    bus.subscribe("slow", ThingHappened, slow)
    await bus.start()
    [event_id] = await publish(db, outbox, ThingHappened(n=1))
    async with asyncio.timeout(10):
        await entered.wait()

    stopping = asyncio.create_task(bus.stop())
    release.set()
    await stopping

    assert finished == [event_id]
    assert statuses(db) == {(event_id, "slow"): "completed"}


async def test_a_delivery_interrupted_by_stop_is_delivered_again(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    bus = make_bus()
    entered = asyncio.Event()

    async def stuck(_event: ThingHappened, _meta: EventMeta) -> None:
        entered.set()
        await asyncio.Event().wait()  # never finishes

    bus.subscribe("listener", ThingHappened, stuck)
    await bus.start()
    [event_id] = await publish(db, outbox, ThingHappened(n=1))
    async with asyncio.timeout(10):
        await entered.wait()
    await bus.stop(grace_s=0.01)  # the handler cannot finish: it is cancelled

    restarted = make_bus()
    subscriber = Subscriber()
    restarted.subscribe("listener", ThingHappened, subscriber)
    await restarted.start()
    await restarted.drain(timeout=10)

    assert [(meta.id, meta.attempt) for _, meta in subscriber.calls] == [(event_id, 1)]


class _Signal(logging.Handler):
    """Sets ``seen`` when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_the_relay_survives_database_errors(
    db: Database, outbox: Outbox, make_bus: BusFactory
) -> None:
    tables = outbox_tables(MODULE)[0].metadata
    tables.drop_all(db.engine)
    logger = logging.getLogger("quarry.events")  # the bus's default logger
    signal = _Signal("event relay pass failed")
    logger.addHandler(signal)
    try:
        bus = make_bus()
        subscriber = Subscriber()
        bus.subscribe("listener", ThingHappened, subscriber)
        await bus.start()
        async with asyncio.timeout(10):
            await signal.seen.wait()
    finally:
        logger.removeHandler(signal)

    tables.create_all(db.engine)
    ids = await publish(db, outbox, ThingHappened(n=1))
    await bus.drain(timeout=10)

    assert subscriber.ids() == ids


def test_a_subscriber_subscribes_once_per_event_type() -> None:
    bus = EventBus(max_attempts=1, retry_base_s=0, poll_s=1, retention_s=1)
    bus.subscribe("listener", ThingHappened, Subscriber())
    with pytest.raises(ValueError, match="already subscribes"):
        bus.subscribe("listener", ThingHappened, Subscriber())
    with pytest.raises(TypeError):
        bus.subscribe("listener", dict, Subscriber())
    assert bus.subscribers_of("ThingHappened") == ["listener"]
    assert bus.subscribers_of("demo.nobody") == []
