"""Page cursors round-trip, and a cursor of one list (or a changed one) is refused."""

from __future__ import annotations

import pytest

from app.kernel.cursors import decode_cursor, encode_cursor
from contracts.common import InvalidInput


def test_a_cursor_round_trips_its_key() -> None:
    cursor = encode_cursor("job", 1767268800.25, "abc")
    assert decode_cursor(cursor, "job", float, str) == (1767268800.25, "abc")
    assert decode_cursor(encode_cursor("job", 3, "x"), "job", float, str) == (3.0, "x")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage",
        "!!!",
        encode_cursor("report", 1.0, "x"),
        encode_cursor("job", "1", "x"),
        encode_cursor("job", 1.0),
    ],
)
def test_foreign_or_changed_cursors_are_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput, match="invalid cursor"):
        decode_cursor(cursor, "job", float, str)
