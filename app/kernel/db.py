"""One SQLAlchemy engine per module, transactions off the event loop, and alembic migrations.

SQLite (the embedded default) runs in WAL mode with foreign keys on; write transactions take
the write lock up front (``BEGIN IMMEDIATE``) so concurrent writers wait instead of failing.
PostgreSQL runs through psycopg 3, with a connection timeout of ``CONNECT_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

__all__ = ["CONNECT_TIMEOUT_S", "Database", "alembic_env", "create_engine"]

T = TypeVar("T")

_READ_ONLY = "quarry_read_only"
CONNECT_TIMEOUT_S = 5
"""Seconds a new PostgreSQL connection may take (``connect_timeout`` in the URL overrides it)."""


def create_engine(url: str) -> Engine:
    """An engine for ``url`` with Quarry's connection settings applied."""
    scheme = url.split(":", 1)[0]
    if scheme in ("postgres", "postgresql"):
        url = "postgresql+psycopg" + url[len(scheme) :]
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # A server that does not answer (a host gone, a firewall dropping packets) fails a connection
    # attempt after this long rather than the operating system's minutes; the URL may say otherwise.
    connect_args = {} if "connect_timeout" in url else {"connect_timeout": CONNECT_TIMEOUT_S}
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
    )


def _sqlite_engine(url: str) -> Engine:
    path = sa.engine.make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


class Database:
    """A module's database: sync SQLAlchemy Core run in worker threads.

    ``write`` runs a function in one transaction; ``read`` in a read-only one. Both hand the
    function a :class:`~sqlalchemy.engine.Connection` and return what it returns.
    """

    def __init__(self, module: str, url: str) -> None:
        self.module = module
        self.url = url
        self.engine = create_engine(url)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a write transaction, off the event loop."""
        return await asyncio.to_thread(self.write_sync, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a read-only transaction, off the event loop."""
        return await asyncio.to_thread(self.read_sync, fn)

    def write_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a write transaction on this thread."""
        with self.engine.begin() as conn:
            return fn(conn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a read-only transaction on this thread."""
        with self.engine.connect() as plain:
            conn = plain.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                return fn(conn)

    def migrate(self, environment: str) -> None:
        """Upgrade to the newest revision of ``migrations/<environment>`` (own version table)."""
        config = Config()
        location = importlib.resources.files("migrations") / environment
        config.set_main_option("script_location", str(location))
        config.attributes["version_table"] = f"alembic_version_{self.module}"
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def alembic_env() -> None:
    """The body of every module's ``env.py``: run migrations on the connection handed over."""
    from alembic import context

    conn = context.config.attributes["connection"]
    context.configure(
        connection=conn,
        version_table=context.config.attributes["version_table"],
        render_as_batch=conn.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()
