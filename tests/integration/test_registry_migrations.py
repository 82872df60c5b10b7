"""The registry migrations build exactly the tables store.py declares (SQLite and PostgreSQL)."""

from __future__ import annotations

import importlib.resources
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from app.kernel.db import Database
from app.kernel.events import outbox_tables
from app.modules.registry import store


def _expected() -> sa.MetaData:
    metadata = sa.MetaData()
    for table in store.metadata.tables.values():
        table.to_metadata(metadata)
    outbox_tables("registry", metadata)
    return metadata


def test_migrations_match_the_declared_tables(database_url: str) -> None:
    db = Database("registry", database_url)
    try:
        db.migrate("registry")
        db.migrate("registry")  # a second run finds nothing to do

        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={"include_name": lambda name, kind, _: name != "alembic_version_registry"},
            )
            differences = compare_metadata(context, _expected())
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        db.dispose()

    assert differences == []
    assert tables == {
        "alembic_version_registry",
        "registry_models",
        "registry_versions",
        "registry_aliases",
        "registry_reference_profiles",
        "registry_alias_history",
        "registry_outbox",
        "registry_event_deliveries",
    }


def test_every_table_is_prefixed_with_the_module_name() -> None:
    assert all(name.startswith("registry_") for name in store.metadata.tables)


def _move_to(db: Database, revision: str, *, down: bool) -> None:
    config = Config()
    config.set_main_option(
        "script_location", str(importlib.resources.files("migrations") / "registry")
    )
    config.attributes["version_table"] = "alembic_version_registry"
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def test_reference_profiles_upgrade_over_existing_versions_and_go_back(database_url: str) -> None:
    db = Database("registry", database_url)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    version = {
        "model": "iris",
        "version": 1,
        "sha256": "0" * 64,
        "size": 1,
        "signature": {"inputs": [], "outputs": []},
        "status": "ready",
        "description": "",
        "tags": {},
        "metrics": {},
        "params": {},
        "lineage": {},
        "idempotency_key": None,
        "created_at": now,
    }
    try:
        _move_to(db, "0001_registry_initial", down=False)
        with db.engine.begin() as conn:
            conn.execute(
                store.models.insert().values(
                    name="iris",
                    description="",
                    tags={},
                    next_version=2,
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(store.versions.insert().values(version))
        db.migrate("registry")
        with db.engine.begin() as conn:
            conn.execute(
                store.reference_profiles.insert().values(model="iris", version=1, profile=b"x")
            )
        upgraded = db.read_sync(lambda c: store.get_version(c, "iris", 1))

        _move_to(db, "0001_registry_initial", down=True)
        tables = _tables(db)
        with db.engine.connect() as conn:
            kept = conn.execute(sa.select(store.versions.c.version)).scalars().all()
    finally:
        db.dispose()

    assert upgraded is not None
    assert upgraded.has_reference_profile is True
    assert "registry_reference_profiles" not in tables
    assert "registry_versions" in tables
    assert kept == [1]
