"""The features module's tables: migrations, versioned views and services, transform states and
the offline store's upsert (SQLite and PostgreSQL)."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from app.kernel.db import Database
from app.kernel.events import outbox_tables
from app.modules.features import store
from contracts.features import (
    Feature,
    FeatureService,
    FeatureView,
    Standardize,
    TransformState,
)

VERSION_TABLE = "alembic_version_features"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database("features", database_url)
    database.migrate("features")
    yield database
    database.dispose()


def _view(name: str, version: int, *, ttl: int = 0) -> FeatureView:
    return FeatureView(
        name=name,
        version=version,
        entities=["user_id"],
        features=[
            Feature(name="clicks", dtype="int", default=0),
            Feature(name="ctr", dtype="float"),
        ],
        ttl_seconds=ttl,
        tags={"team": "growth"},
    )


def _expected() -> sa.MetaData:
    """The module's tables and its event outbox (the kernel declares the outbox)."""
    metadata = sa.MetaData()
    for table in store.metadata.tables.values():
        table.to_metadata(metadata)
    outbox_tables("features", metadata)
    return metadata


def _downgrade(db: Database) -> None:
    config = Config()
    config.set_main_option(
        "script_location", str(importlib.resources.files("migrations") / "features")
    )
    config.attributes["version_table"] = VERSION_TABLE
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_migrations_build_the_declared_tables_and_go_back(db: Database) -> None:
    db.migrate("features")  # a second run finds nothing to do
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_name": lambda name, kind, _: name != VERSION_TABLE}
        )
        differences = compare_metadata(context, _expected())
    assert differences == []
    assert _tables(db) == {VERSION_TABLE, *_expected().tables}

    _downgrade(db)
    assert _tables(db) == {VERSION_TABLE}
    db.migrate("features")
    assert _tables(db) == {VERSION_TABLE, *_expected().tables}


def test_every_table_is_prefixed_with_the_module_name() -> None:
    assert all(name.startswith("features_") for name in store.metadata.tables)


def test_views_keep_every_version_and_answer_the_latest(db: Database) -> None:
    created = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    db.write_sync(lambda c: store.insert_view(c, _view("users", 1)))
    second = msgspec.structs.replace(_view("users", 2, ttl=60), created_at=created)
    db.write_sync(lambda c: store.insert_view(c, second))

    latest = db.read_sync(lambda c: store.latest_view(c, "users"))
    first = db.read_sync(lambda c: store.get_view(c, "users", 1))

    assert latest is not None
    assert (latest.version, latest.ttl_seconds, latest.created_at) == (2, 60, created)
    assert first is not None
    assert first.features == _view("users", 1).features
    assert first.tags == {"team": "growth"}
    assert first.created_at is not None
    assert first.created_at.tzinfo is not None
    assert db.read_sync(lambda c: store.get_view(c, "users", 3)) is None
    assert db.read_sync(lambda c: store.latest_view(c, "nobody")) is None


def test_a_version_is_stored_once(db: Database) -> None:
    db.write_sync(lambda c: store.insert_view(c, _view("users", 1)))
    with pytest.raises(sa.exc.IntegrityError):
        db.write_sync(lambda c: store.insert_view(c, _view("users", 1)))


def test_views_page_by_name_with_their_latest_versions(db: Database) -> None:
    for name, versions in (("c", 1), ("a", 3), ("d", 1), ("b", 2)):
        for version in range(1, versions + 1):
            db.write_sync(lambda c, n=name, v=version: store.insert_view(c, _view(n, v)))

    first, cursor = db.read_sync(lambda c: store.page_views(c, 3, None))
    rest, end = db.read_sync(lambda c: store.page_views(c, 3, cursor))

    assert [(v.name, v.version) for v in first] == [("a", 3), ("b", 2), ("c", 1)]
    assert cursor == "c"
    assert [(v.name, v.version) for v in rest] == [("d", 1)]
    assert end is None
    assert db.read_sync(lambda c: store.page_views(c, 4, None))[1] is None


def test_services_keep_versions_transforms_and_pages(db: Database) -> None:
    for version in (1, 2):
        service = FeatureService(
            name="ranker",
            version=version,
            features=["users:clicks", "users:ctr"][:version],
            transforms=[Standardize(input="users:clicks")],
        )
        db.write_sync(lambda c, s=service: store.insert_service(c, s))
    db.write_sync(
        lambda c: store.insert_service(c, FeatureService(name="alpha", version=1, features=[]))
    )

    latest = db.read_sync(lambda c: store.latest_service(c, "ranker"))
    first = db.read_sync(lambda c: store.get_service(c, "ranker", 1))
    page, cursor = db.read_sync(lambda c: store.page_services(c, 1, None))
    rest, end = db.read_sync(lambda c: store.page_services(c, 5, cursor))

    assert latest is not None
    assert latest.features == ["users:clicks", "users:ctr"]
    assert latest.transforms == [Standardize(input="users:clicks")]
    assert first is not None
    assert first.features == ["users:clicks"]
    assert [s.name for s in page] == ["alpha"]
    assert [(s.name, s.version) for s in rest] == [("ranker", 2)]
    assert (cursor, end) == ("alpha", None)
    assert db.read_sync(lambda c: store.get_service(c, "nobody", 1)) is None


def test_transform_states_round_trip(db: Database) -> None:
    state = TransformState(
        id="ts_1",
        service="ranker",
        service_version=2,
        params=[{"mean": 1.5, "std": 0.25}, {"categories": None, "count": 3, "on": True}],
        columns=["users:clicks", "users:ctr"],
        rows=1000,
        created_at=datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    )
    db.write_sync(lambda c: store.insert_state(c, state))

    assert db.read_sync(lambda c: store.get_state(c, "ts_1")) == state
    assert db.read_sync(lambda c: store.get_state(c, "ts_2")) is None


def _offline(db: Database, view: str) -> list[tuple[str, int, dict[str, object]]]:
    table = store.offline_rows
    query = (
        sa.select(table.c.entity_key, table.c.event_ts, table.c["values"])
        .where(table.c.view == view)
        .order_by(table.c.entity_key, table.c.event_ts)
    )
    return db.read_sync(lambda c: [tuple(r) for r in c.execute(query)])


def test_pushing_the_same_rows_twice_changes_nothing(db: Database) -> None:
    rows = [
        (f"user_id={i}", 1_700_000_000_000_000 + t, {"clicks": i * t, "ctr": 0.5, "on": True})
        for i in range(50)
        for t in range(3)
    ]
    db.write_sync(lambda c: store.write_offline(c, "users", rows))
    before = _offline(db, "users")
    db.write_sync(lambda c: store.write_offline(c, "users", rows))

    assert db.read_sync(lambda c: store.count_offline(c, "users")) == 150
    assert _offline(db, "users") == before
    assert sorted(before) == sorted(rows)
    assert db.read_sync(lambda c: store.count_offline(c, "other")) == 0


def test_a_new_value_at_the_same_timestamp_replaces_the_old(db: Database) -> None:
    db.write_sync(lambda c: store.write_offline(c, "users", [("user_id=1", 10, {"ctr": 0.1})]))
    db.write_sync(
        lambda c: store.write_offline(
            c, "users", [("user_id=1", 10, {"ctr": 0.2}), ("user_id=1", 11, {"ctr": 0.3})]
        )
    )
    # within one batch the last of two rows with the same key and timestamp wins
    db.write_sync(
        lambda c: store.write_offline(
            c, "users", [("user_id=2", 10, {"ctr": 1.0}), ("user_id=2", 10, {"ctr": 2.0})]
        )
    )

    assert _offline(db, "users") == [
        ("user_id=1", 10, {"ctr": 0.2}),
        ("user_id=1", 11, {"ctr": 0.3}),
        ("user_id=2", 10, {"ctr": 2.0}),
    ]
