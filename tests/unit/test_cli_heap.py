"""A server process's collector: start-up's objects frozen, young objects collected less often,
reference cycles still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.cli import heap


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


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
def test_cycles_made_after_settling_are_still_collected() -> None:
    heap.settle()
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None
