"""The registry migrations build exactly the tables store.py declares (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
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
        "registry_outbox",
        "registry_event_deliveries",
    }


def test_every_table_is_prefixed_with_the_module_name() -> None:
    assert all(name.startswith("registry_") for name in store.metadata.tables)
