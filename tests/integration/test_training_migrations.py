"""The training migrations build exactly the tables store.py declares (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.kernel.db import Database
from app.kernel.events import outbox_tables
from app.modules.training import store


def test_migrations_match_the_declared_tables(database_url: str) -> None:
    expected = sa.MetaData()
    for table in store.metadata.tables.values():
        table.to_metadata(expected)
    outbox_tables("training", expected)
    db = Database("training", database_url)
    try:
        db.migrate("training")
        db.migrate("training")  # a second run finds nothing to do
        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={"include_name": lambda name, kind, _: name != "alembic_version_training"},
            )
            differences = compare_metadata(context, expected)
    finally:
        db.dispose()

    assert differences == []
