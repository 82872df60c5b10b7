"""Ids: random ones all different; ordered ones sort by the time they were made."""

from __future__ import annotations

import re
import time

from app.kernel.ids import ordered_id, unique_id

HEX32 = re.compile(r"[0-9a-f]{32}")


def test_ids_are_32_hex_digits_and_never_repeat() -> None:
    ids = [unique_id() for _ in range(2000)] + [ordered_id() for _ in range(2000)]

    assert all(HEX32.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_ordered_ids_sort_by_the_millisecond_they_were_made() -> None:
    made = []
    for _ in range(5):
        made.append(ordered_id())
        started = time.monotonic_ns()
        while time.monotonic_ns() - started < 2_000_000:  # into a later millisecond
            pass

    assert sorted(made) == made
    now_ms = time.time_ns() // 1_000_000
    assert 0 <= now_ms - int(made[-1][:12], 16) < 60_000


def test_ordered_ids_of_one_millisecond_differ_in_their_random_part() -> None:
    same = {ordered_id()[12:] for _ in range(500)}

    assert len(same) == 500
