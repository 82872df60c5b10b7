"""The inference migrations build exactly the tables store.py declares (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.kernel.db import Database
from app.kernel.events import outbox_tables
from app.modules.inference import store


def _expected() -> sa.MetaData:
    metadata = sa.MetaData()
    for table in store.metadata.tables.values():
        table.to_metadata(metadata)
    outbox_tables("inference", metadata)
    return metadata


def test_migrations_match_the_declared_tables(database_url: str) -> None:
    db = Database("inference", database_url)
    try:
        db.migrate("inference")
        db.migrate("inference")  # a second run finds nothing to do

        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={"include_name": lambda name, kind, _: name != "alembic_version_inference"},
            )
            differences = compare_metadata(context, _expected())
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        db.dispose()

    assert differences == []
    assert tables == {
        "alembic_version_inference",
        "inference_batch_chunks",
        "inference_batch_jobs",
        "inference_deployments",
        "inference_event_deliveries",
        "inference_outbox",
        "inference_rollouts",
    }


def test_every_table_is_prefixed_with_the_module_name() -> None:
    assert all(name.startswith("inference_") for name in store.metadata.tables)
