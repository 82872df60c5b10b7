"""The dependency monitor's database checks: their own threads, and a second chance for a slow
answer.

Each test watches a real SQLite database whose ``SELECT 1`` can be held at a gate, standing in for
a server that is slow or hangs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.kernel.db import Database
from app.kernel.dependencies import TIMEOUTS_TO_DOWN, DependencyMonitor

TIMEOUT_S = 1.0


class Gate:
    """Holds every ``SELECT 1`` on ``db`` while closed."""

    def __init__(self, db: Database) -> None:
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.passed = threading.Event()
        self.pings = 0
        sa.event.listen(db.engine, "before_cursor_execute", self._before)
        sa.event.listen(db.engine, "after_cursor_execute", self._after)

    def close(self) -> None:
        self.open.clear()
        self.entered.clear()
        self.passed.clear()

    def _before(self, *_: Any) -> None:
        self.pings += 1
        self.entered.set()
        self.open.wait()

    def _after(self, *_: Any) -> None:
        self.passed.set()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database("registry", f"sqlite:///{tmp_path / 'registry.db'}")
    yield database
    database.dispose()


@pytest.fixture
def gate(db: Database) -> Iterator[Gate]:
    gate = Gate(db)
    yield gate
    gate.open.set()  # let a held check end before the database is closed


@pytest.fixture
async def monitor(db: Database, gate: Gate) -> AsyncIterator[DependencyMonitor]:
    monitor = DependencyMonitor(interval_s=3600, timeout_s=TIMEOUT_S)
    monitor.add_database("registry", db)
    await monitor.start()
    assert monitor.statuses()[0].up is True
    yield monitor
    gate.open.set()
    await monitor.stop()


def state(monitor: DependencyMonitor) -> tuple[bool | None, str | None]:
    (status,) = monitor.statuses()
    return status.up, status.error


async def test_database_checks_do_not_wait_behind_the_default_executor(
    db: Database, gate: Gate
) -> None:
    loop = asyncio.get_running_loop()
    busy = threading.Event()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    held = asyncio.ensure_future(asyncio.to_thread(busy.wait))  # the application's slow work
    monitor = DependencyMonitor(interval_s=3600, timeout_s=TIMEOUT_S)
    monitor.add_database("registry", db)
    try:
        await monitor.start()
        await monitor.check_now()
        assert state(monitor) == (True, None)
        assert gate.pings >= 2
    finally:
        busy.set()
        await held
        await monitor.stop()


async def test_one_slow_answer_leaves_the_database_up(
    monitor: DependencyMonitor, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quarry.dependencies")
    gate.close()
    await monitor.check_now()  # out of time once: not yet down
    assert gate.entered.is_set()
    assert state(monitor) == (True, None)
    pings = gate.pings
    gate.open.set()
    await monitor.check_now()  # waits on the check still running, then checks again
    assert state(monitor) == (True, None)
    assert gate.pings <= pings + 2  # the held check was not started a second time meanwhile
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


async def test_a_database_that_hangs_is_down_after_two_checks_out_of_time(
    monitor: DependencyMonitor, gate: Gate
) -> None:
    gate.close()
    pings = gate.pings
    for _ in range(TIMEOUTS_TO_DOWN - 1):
        await monitor.check_now()
        assert state(monitor) == (True, None)
    await monitor.check_now()
    assert state(monitor) == (False, "TimeoutError")
    assert gate.pings == pings + 1  # one held ping, waited on by every check since
    assert monitor.unavailable() == ["registry.database"]
    gate.open.set()
    await monitor.check_now()
    assert state(monitor) == (True, None)


async def test_a_refused_connection_marks_the_database_down_at_once(
    monitor: DependencyMonitor, db: Database, tmp_path: Path
) -> None:
    db.engine.dispose()
    db.engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'registry.db'}")
    await monitor.check_now()
    assert state(monitor) == (False, "OperationalError")
