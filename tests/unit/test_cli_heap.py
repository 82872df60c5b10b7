"""A server process's memory: start-up's objects frozen, young objects collected less often,
reference cycles still collected, SQLite's heap bounded."""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import weakref
from collections.abc import Iterator

import pytest

from app.cli import heap


@pytest.fixture
def restored() -> Iterator[None]:
    threshold, limit = gc.get_threshold(), _sqlite_heap_limit()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    _sqlite_heap_limit(limit)


def _sqlite_heap_limit(value: int = -1) -> int:
    """SQLite's soft heap limit in this process, first set to ``value`` unless it is -1."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        return int(conn.execute(f"PRAGMA soft_heap_limit={value}").fetchone()[0])


class _Node:
    other: _Node | None = None


@pytest.mark.usefixtures("restored")
def test_settle_freezes_what_exists_and_raises_the_young_threshold() -> None:
    assert gc.get_freeze_count() == 0
    _, middle, old = gc.get_threshold()
    heap.settle()
    assert gc.get_freeze_count() > 1000
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    assert gc.get_threshold()[1:] == (middle, old)


@pytest.mark.usefixtures("restored")
def test_settle_bounds_what_sqlite_keeps_in_the_process() -> None:
    heap.settle()
    assert _sqlite_heap_limit() == heap.SQLITE_HEAP_BYTES


@pytest.mark.usefixtures("restored")
def test_cycles_made_after_settling_are_still_collected() -> None:
    heap.settle()
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None
