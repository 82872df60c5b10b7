"""Domain events over Redis Streams between buses standing for separate processes.

Needs Redis (skipped locally without it, required in CI); every test has its own key prefix and
deletes its keys at the end. Databases run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
import redis
import sqlalchemy as sa
from opentelemetry import trace

from app.kernel.db import Database
from app.kernel.events import (
    EventBus,
    EventMeta,
    Outbox,
    StreamEventBus,
    list_failed_inbox,
    make_event_bus,
    outbox_tables,
    retry_failed_inbox,
)
from app.kernel.settings import Settings
from tests.conftest import REDIS_URL

PUBLISHER = "pub"


class ThingHappened(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    n: int


class NobodyListens(msgspec.Struct, frozen=True, kw_only=True, tag="streams.nobody"):
    pass


@dataclass
class Subscriber:
    """Records every call; raises while ``failing`` is set; ``called`` is set on each call."""

    failing: bool = False
    calls: list[tuple[ThingHappened, EventMeta]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: ThingHappened, meta: EventMeta) -> None:
        self.calls.append((event, meta))
        self.called.set()
        if self.failing:
            raise RuntimeError(f"down on attempt {meta.attempt}")

    def ids(self) -> list[str]:
        return [meta.id for _, meta in self.calls]


@pytest.fixture
def prefix(redis_namespace: str) -> str:
    """A key prefix private to the test; its keys are deleted at the end."""
    return f"{redis_namespace}:"


@pytest.fixture
def raw(prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def stream(prefix: str) -> str:
    return f"{prefix}events:{PUBLISHER}"


@pytest.fixture
def pub_db(database_url: str) -> Iterator[Database]:
    database = Database(PUBLISHER, database_url)
    outbox_tables(PUBLISHER)[0].metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def make_db(database_url: str, tmp_path: Path) -> Iterator[Callable[[str], Database]]:
    """Subscriber databases: their own SQLite file, or the test's PostgreSQL schema."""
    made: list[Database] = []

    def factory(module: str) -> Database:
        url = database_url
        if url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / 'subscribers.db'}"
        made.append(Database(module, url))
        return made[-1]

    yield factory
    for database in made:
        database.dispose()


@pytest.fixture
def outbox() -> Outbox:
    return Outbox(PUBLISHER, (ThingHappened, NobodyListens))


BusFactory = Callable[..., StreamEventBus]


@pytest.fixture
async def make_bus(
    prefix: str, pub_db: Database, make_db: Callable[[str], Database]
) -> AsyncIterator[BusFactory]:
    """Buses on the test's prefix (each one a process of its own), stopped at the end (before
    the databases they use are disposed)."""
    made: list[StreamEventBus] = []

    def factory(**overrides: float) -> StreamEventBus:
        options = {
            "max_attempts": 3,
            "retry_base_s": 0.01,
            "poll_s": 0.05,
            "retention_s": 3600.0,
            "claim_idle_s": 5.0,
        } | overrides
        bus = StreamEventBus(
            url=REDIS_URL,
            prefix=prefix,
            max_attempts=int(options["max_attempts"]),
            retry_base_s=options["retry_base_s"],
            poll_s=options["poll_s"],
            retention_s=options["retention_s"],
            claim_idle_s=options["claim_idle_s"],
            stream_maxlen=int(options.get("stream_maxlen", 100_000)),
        )
        made.append(bus)
        return bus

    yield factory
    for bus in made:
        await bus.stop()


@pytest.fixture
async def publisher(make_bus: BusFactory, pub_db: Database, outbox: Outbox) -> StreamEventBus:
    """The publishing process, running."""
    bus = make_bus()
    bus.add_publisher(PUBLISHER, pub_db, outbox)
    await bus.start()
    return bus


def subscriber_bus(
    make_bus: BusFactory,
    dbs: dict[str, Database],
    handlers: dict[str, Subscriber],
    **options: float,
) -> StreamEventBus:
    """A subscribing process hosting ``handlers`` (module -> handler of ThingHappened)."""
    bus = make_bus(**options)
    bus.declare_publisher(PUBLISHER, [ThingHappened, NobodyListens])
    for module, db in dbs.items():
        bus.add_subscriber(module, db)
    for module, handler in handlers.items():
        bus.subscribe(module, ThingHappened, handler)
    return bus


async def publish(db: Database, outbox: Outbox, *events: msgspec.Struct) -> list[str]:
    return await db.write(lambda conn: [outbox.add(conn, e) for e in events])


def group_pending(raw: redis.Redis, stream: str, group: str) -> int:
    return int(raw.xpending(stream, group)["pending"])


async def test_each_subscribing_module_gets_each_event_once_across_processes(
    publisher: StreamEventBus,
    pub_db: Database,
    outbox: Outbox,
    make_bus: BusFactory,
    make_db: Callable[[str], Database],
    raw: redis.Redis,
    stream: str,
) -> None:
    audit, audit_replica, search = Subscriber(), Subscriber(), Subscriber()
    first = subscriber_bus(
        make_bus, {"audit": make_db("audit"), "search": make_db("search")}, {"audit": audit}
    )
    first.subscribe("search", ThingHappened, search)
    second = subscriber_bus(make_bus, {"audit": make_db("audit")}, {"audit": audit_replica})
    assert first.consumer != second.consumer
    await first.start()
    await second.start()

    ids = await publish(pub_db, outbox, *(ThingHappened(n=n) for n in range(10)), NobodyListens())
    await publisher.drain(timeout=10)
    await first.drain(timeout=10)
    await second.drain(timeout=10)

    assert [event.n for event, _ in search.calls] == list(range(10))
    assert search.ids() == ids[:10]
    assert sorted(audit.ids() + audit_replica.ids()) == sorted(ids[:10])
    assert {(m.publisher, m.type, m.attempt) for _, m in search.calls} == {
        (PUBLISHER, "ThingHappened", 1)
    }
    assert first.subscribers_of("ThingHappened") == ["audit", "search"]
    assert raw.xlen(stream) == 11
    assert group_pending(raw, stream, "audit") == group_pending(raw, stream, "search") == 0
    assert list_failed_inbox(make_db("audit"), "audit") == []


async def test_a_failing_handler_is_retried_failed_then_resubmitted_once(
    publisher: StreamEventBus,
    pub_db: Database,
    outbox: Outbox,
    make_bus: BusFactory,
    make_db: Callable[[str], Database],
) -> None:
    healthy, broken = Subscriber(), Subscriber(failing=True)
    broken_db = make_db("broken")
    bus = subscriber_bus(
        make_bus,
        {"healthy": make_db("healthy"), "broken": broken_db},
        {"healthy": healthy, "broken": broken},
        max_attempts=2,
    )
    await bus.start()

    [event_id] = await publish(pub_db, outbox, ThingHappened(n=1))
    await publisher.drain(timeout=10)
    await bus.drain(timeout=10)

    assert healthy.ids() == [event_id]
    assert [(meta.id, meta.attempt) for _, meta in broken.calls] == [(event_id, 1), (event_id, 2)]
    [failed] = list_failed_inbox(broken_db, "broken")
    assert (failed.event_id, failed.type, failed.subscriber, failed.attempts) == (
        event_id,
        "ThingHappened",
        "broken",
        2,
    )
    assert failed.last_error == "down on attempt 2"

    broken.failing = False
    assert retry_failed_inbox(broken_db, "broken", event_id="no-such-event") == 0
    assert retry_failed_inbox(broken_db, "broken", event_id=event_id) == 1
    await bus.drain(timeout=10)  # the running consumer polls its inbox

    assert broken.ids() == [event_id] * 3
    assert broken.calls[-1][1].attempt == 1
    assert healthy.ids() == [event_id]
    assert list_failed_inbox(broken_db, "broken") == []
    assert retry_failed_inbox(broken_db, "broken") == 0


async def test_entries_a_dead_consumer_read_are_reclaimed(
    publisher: StreamEventBus,
    pub_db: Database,
    outbox: Outbox,
    make_bus: BusFactory,
    make_db: Callable[[str], Database],
    raw: redis.Redis,
    stream: str,
) -> None:
    ids = await publish(pub_db, outbox, ThingHappened(n=1), ThingHappened(n=2))
    await publisher.drain(timeout=10)
    # A process read the first entry as consumer "dead", then died before acknowledging it.
    raw.xgroup_create(stream, "listener", id="0", mkstream=True)
    [[_stream, [(entry_id, _fields)]]] = raw.xreadgroup("listener", "dead", {stream: ">"}, count=1)
    assert group_pending(raw, stream, "listener") == 1

    listener = Subscriber()
    bus = subscriber_bus(
        make_bus, {"listener": make_db("listener")}, {"listener": listener}, claim_idle_s=0.2
    )
    await bus.start()
    await bus.drain(timeout=10)

    assert sorted(listener.ids()) == sorted(ids)
    assert group_pending(raw, stream, "listener") == 0
    assert raw.xpending_range(stream, "listener", "-", "+", 10) == []
    assert entry_id  # the dead consumer's entry was among those delivered


async def test_a_handler_cut_off_by_a_stopping_process_is_delivered_by_another(
    publisher: StreamEventBus,
    pub_db: Database,
    outbox: Outbox,
    make_bus: BusFactory,
    make_db: Callable[[str], Database],
    raw: redis.Redis,
    stream: str,
) -> None:
    entered = asyncio.Event()

    async def stuck(_event: ThingHappened, _meta: EventMeta) -> None:
        entered.set()
        await asyncio.Event().wait()  # never finishes

    first = make_bus(claim_idle_s=0.2)
    first.declare_publisher(PUBLISHER, [ThingHappened])
    first.add_subscriber("listener", make_db("listener"))
    first.subscribe("listener", ThingHappened, stuck)
    await first.start()
    [event_id] = await publish(pub_db, outbox, ThingHappened(n=1))
    async with asyncio.timeout(10):
        await entered.wait()
    await first.stop(grace_s=0.01)  # cancelled mid-handler: the entry is never acknowledged
    assert group_pending(raw, stream, "listener") == 1

    listener = Subscriber()
    second = subscriber_bus(
        make_bus, {"listener": make_db("listener")}, {"listener": listener}, claim_idle_s=0.2
    )
    await second.start()
    await second.drain(timeout=10)

    assert [(meta.id, meta.attempt) for _, meta in listener.calls] == [(event_id, 1)]
    assert group_pending(raw, stream, "listener") == 0


async def test_an_event_published_twice_is_handled_once(
    publisher: StreamEventBus,
    pub_db: Database,
    outbox: Outbox,
    make_bus: BusFactory,
    make_db: Callable[[str], Database],
    raw: redis.Redis,
    stream: str,
) -> None:
    listener = Subscriber()
    bus = subscriber_bus(make_bus, {"listener": make_db("listener")}, {"listener": listener})
    await bus.start()
    [event_id] = await publish(pub_db, outbox, ThingHappened(n=1))
    await publisher.drain(timeout=10)
    await bus.drain(timeout=10)

    # The publisher crashed after XADD and before marking the row: it publishes it again.
    table = outbox.table
    await pub_db.write(lambda c: c.execute(table.update().values(dispatched=sa.false())))
    await publisher.drain(timeout=10)
    await bus.drain(timeout=10)

    assert raw.xlen(stream) == 2
    assert listener.ids() == [event_id]
    assert group_pending(raw, stream, "listener") == 0


async def test_events_published_while_no_subscriber_runs_are_delivered_at_its_start(
    publisher: StreamEventBus,
    pub_db: Database,
    outbox: Outbox,
    make_bus: BusFactory,
    make_db: Callable[[str], Database],
) -> None:
    before = await publish(pub_db, outbox, ThingHappened(n=1))
    await publisher.drain(timeout=10)

    listener = Subscriber()
    bus = subscriber_bus(make_bus, {"listener": make_db("listener")}, {"listener": listener})
    await bus.start()
    await bus.drain(timeout=10)
    assert listener.ids() == before

    await bus.stop()
    while_stopped = await publish(pub_db, outbox, ThingHappened(n=2))
    await publisher.drain(timeout=10)
    with pytest.raises(RuntimeError):
        await bus.drain(timeout=1)

    restarted = subscriber_bus(make_bus, {"listener": make_db("listener")}, {"listener": listener})
    await restarted.start()
    await restarted.drain(timeout=10)
    assert listener.ids() == before + while_stopped


async def test_a_delivery_joins_the_publishers_trace(
    publisher: StreamEventBus,
    pub_db: Database,
    outbox: Outbox,
    make_bus: BusFactory,
    make_db: Callable[[str], Database],
) -> None:
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    seen: list[int] = []

    async def handler(_event: ThingHappened, meta: EventMeta) -> None:
        assert meta.traceparent == traceparent
        seen.append(trace.get_current_span().get_span_context().trace_id)

    bus = make_bus()
    bus.declare_publisher(PUBLISHER, [ThingHappened])
    bus.add_subscriber("listener", make_db("listener"))
    bus.subscribe("listener", ThingHappened, handler)
    await bus.start()
    await pub_db.write(lambda c: outbox.add(c, ThingHappened(n=1), traceparent=traceparent))
    await publisher.drain(timeout=10)
    await bus.drain(timeout=10)

    assert seen == [int(trace_id, 16)]


async def test_completed_inbox_rows_are_pruned_after_retention_and_failures_kept(
    publisher: StreamEventBus,
    pub_db: Database,
    outbox: Outbox,
    make_bus: BusFactory,
    make_db: Callable[[str], Database],
) -> None:
    healthy_db, broken_db = make_db("healthy"), make_db("broken")
    bus = subscriber_bus(
        make_bus,
        {"healthy": healthy_db, "broken": broken_db},
        {"healthy": Subscriber(), "broken": Subscriber(failing=True)},
        retention_s=1e-6,
        max_attempts=1,
    )
    await bus.start()
    [event_id] = await publish(pub_db, outbox, ThingHappened(n=1))
    await publisher.drain(timeout=10)
    await bus.drain(timeout=10)  # its last pass pruned after the deliveries completed

    def inbox(db: Database, module: str) -> list[tuple[str, str]]:
        query = sa.text(f"SELECT event_id, status FROM {module}_event_inbox")
        return db.read_sync(lambda c: [(r[0], r[1]) for r in c.execute(query)])

    assert inbox(healthy_db, "healthy") == []
    assert inbox(broken_db, "broken") == [(event_id, "failed")]


async def test_the_stream_is_trimmed_to_about_its_bound(
    make_bus: BusFactory, pub_db: Database, outbox: Outbox, raw: redis.Redis, stream: str
) -> None:
    bus = make_bus(stream_maxlen=10)
    bus.add_publisher(PUBLISHER, pub_db, outbox)
    await bus.start()

    await publish(pub_db, outbox, *(ThingHappened(n=n) for n in range(500)))
    await bus.drain(timeout=10)

    # MAXLEN ~ trims whole stream nodes (100 entries each by default), never below the bound.
    assert 10 <= raw.xlen(stream) <= 110
    assert raw.xrevrange(stream, count=1)[0][1][b"type"] == b"ThingHappened"


def test_wiring_mistakes_fail_at_start() -> None:
    def bus() -> StreamEventBus:
        return StreamEventBus(
            url=REDIS_URL, max_attempts=1, retry_base_s=0, poll_s=1, retention_s=1
        )

    undeclared = bus()
    undeclared.add_subscriber("listener", Database("listener", "sqlite://"))
    undeclared.subscribe("listener", ThingHappened, Subscriber())
    with pytest.raises(RuntimeError, match="no declared module publishes"):
        asyncio.run(undeclared.start())

    no_database = bus()
    no_database.declare_publisher(PUBLISHER, [ThingHappened])
    no_database.subscribe("listener", ThingHappened, Subscriber())
    with pytest.raises(RuntimeError, match="has no database"):
        asyncio.run(no_database.start())
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(no_database.drain(timeout=1))


def test_the_events_url_chooses_the_bus() -> None:
    assert isinstance(make_event_bus(Settings()), EventBus)
    streams = make_event_bus(
        Settings(events_url="redis://localhost:6379/0", redis_prefix="staging:"), consumer="me"
    )
    assert isinstance(streams, StreamEventBus)
    assert (streams.consumer, streams.stream("registry")) == ("me", "staging:events:registry")
    assert make_event_bus(Settings(events_url="redis://localhost")).consumer != (
        make_event_bus(Settings(events_url="redis://localhost")).consumer
    )
