"""What the OpenAPI document says a parameter or body takes is what the route takes: the integer
and duration patterns, whole numbers written as floats, bodies of actions that take none, and
``?version=null``."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
import pytest

from app.kernel.http.bodies import decode_body
from app.kernel.http.params import parse_duration, version_number
from app.kernel.http.patterns import duration_pattern, integer_pattern
from contracts.common import InvalidInput


@pytest.mark.parametrize(
    ("low", "high"), [(0, 9), (1, 99), (37, 4213), (1, 2**31 - 1), (1, 2**63 - 1), (0, 31622400)]
)
def test_an_integer_pattern_matches_its_range_and_nothing_else(low: int, high: int) -> None:
    pattern = re.compile(integer_pattern(low, high))
    near = [*range(max(0, low - 30), low + 30), *range(max(0, high - 30), high + 30)]
    powers = [10**k + d for k in range(20) for d in (-1, 0, 1)]

    wrong = [n for n in [*near, *powers] if bool(pattern.fullmatch(str(n))) != (low <= n <= high)]

    assert not wrong
    assert not pattern.fullmatch(f"0{high}")  # no leading zeros


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0), ("90d", 90 * 86400.0)],
)
def test_a_duration_in_its_pattern_is_read(text: str, seconds: float) -> None:
    pattern = duration_pattern(90 * 86400.0, positive=True)

    assert re.fullmatch(pattern, text)
    assert parse_duration(text, pattern) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "0.0m", "91d", "90.5d", "7776001", "5M", " 5m", "nan"])
def test_a_duration_outside_its_pattern_is_refused(text: str) -> None:
    pattern = duration_pattern(90 * 86400.0, positive=True)

    assert not re.fullmatch(pattern, text)
    with pytest.raises(InvalidInput):
        parse_duration(text, pattern)


class Body(msgspec.Struct, frozen=True):
    count: Annotated[int, msgspec.Meta(ge=0)] = 0
    ratio: float = 0.5
    sizes: list[int] = []


DECODER = msgspec.json.Decoder(Body)


def test_whole_numbers_written_as_floats_are_integers() -> None:
    body = decode_body(
        DECODER, b'{"count": 30.0, "ratio": 1.0, "sizes": [2.0, 3]}', what="b", example="{}"
    )

    assert body == Body(count=30, ratio=1.0, sizes=[2, 3])
    assert type(body.count) is int


@pytest.mark.parametrize("raw", [b'{"count": 1.5}', b'{"count": "3"}', b'{"count": -1.0}'])
def test_other_numbers_for_integers_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_body(DECODER, raw, what="b", example="{}")


@pytest.mark.parametrize("text", ["null", "0", "01", "1.0", "2147483648", " 1"])
def test_a_version_parameter_is_a_plain_number(text: str) -> None:
    with pytest.raises(InvalidInput):
        version_number(text)


def test_a_version_parameter_left_out_is_none() -> None:
    assert version_number(None) is None
    assert version_number("2147483647") == 2**31 - 1


def test_a_refused_number_is_named_by_the_bound_it_breaks() -> None:
    with pytest.raises(InvalidInput, match=">= 0"):
        decode_body(DECODER, b'{"count": -1.0}', what="b", example="{}")


@pytest.mark.parametrize(
    "raw", [b'{"count": "x", oops', b'{"count": 1.0, "sizes": ' + b"[" * 100_000]
)
def test_a_body_broken_after_a_wrong_type_is_a_400(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_body(DECODER, raw, what="b", example="{}")
