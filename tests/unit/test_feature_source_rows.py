"""Source chunks into stored rows: every column type a source may hold, and the errors."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from app.modules.features.source_rows import source_rows
from app.modules.features.sources import Chunk, SourcePolicy
from contracts.common import InvalidInput
from contracts.features import Feature, FeatureSource

T0 = datetime(2026, 1, 1, tzinfo=UTC)
US = 1_000_000
T0_US = int(T0.timestamp()) * US
ALL: tuple[int | None, int] = (None, 2**62)
FEATURES = [
    Feature(name="n", dtype="int"),
    Feature(name="x", dtype="float"),
    Feature(name="ok", dtype="bool"),
    Feature(name="s", dtype="string"),
    Feature(name="v", dtype="float_vector"),
]


def rows(
    table: pa.Table,
    source: FeatureSource | None = None,
    window: tuple[int | None, int] = ALL,
) -> list[tuple[str, int, dict[str, object]]]:
    chunk = Chunk(where="f.parquet", first=10, table=table)
    return source_rows(chunk, ["id"], FEATURES, source or FeatureSource(format="parquet"), window)


def table(**columns: object) -> pa.Table:
    base = {
        "id": [1, 2],
        "event_timestamp": [T0, T0],
        "n": [1, None],
        "x": [0.5, float("nan")],
        "ok": [True, False],
        "s": ["a", None],
        "v": [[1, 2], [0.5]],
    }
    return pa.table({**base, **columns})


def test_every_type_becomes_the_value_a_push_stores() -> None:
    assert rows(table()) == [
        ("id=1", T0_US, {"n": 1, "x": 0.5, "ok": True, "s": "a", "v": [1.0, 2.0]}),
        ("id=2", T0_US, {"n": None, "x": None, "ok": False, "s": None, "v": [0.5]}),
    ]


@pytest.mark.parametrize(
    "times",
    [
        ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00"],
        ["2026-01-01T00:00:00", "2026-01-01 00:00:00"],
        ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00"],  # mixed: each read as Python reads it
        [T0.timestamp(), T0.timestamp()],
        [int(T0.timestamp()), int(T0.timestamp())],
        [date(2026, 1, 1), date(2026, 1, 1)],
        [T0.replace(tzinfo=None), T0.replace(tzinfo=None)],
    ],
)
def test_event_times_of_every_kind_are_utc_microseconds(times: list[object]) -> None:
    found = rows(table(event_timestamp=times))
    assert [ts for _, ts, _ in found] == [T0_US, T0_US]


def test_the_window_keeps_start_exclusive_end_inclusive() -> None:
    times = [T0.replace(hour=h) for h in (1, 2)] + [T0.replace(hour=3)]
    three = table(
        event_timestamp=times,
        id=[1, 2, 3],
        n=[1, 2, 3],
        x=[0.0] * 3,
        ok=[True] * 3,
        s=["a"] * 3,
        v=[[1.0]] * 3,
    )
    kept = rows(three, window=(T0_US + 3600 * US, T0_US + 3 * 3600 * US))
    assert [key for key, _, _ in kept] == ["id=2", "id=3"]


def test_created_timestamp_orders_ties_so_the_latest_created_is_written_last() -> None:
    source = FeatureSource(format="parquet", created_timestamp="created")
    found = rows(table(id=[1, 1], created=[T0.replace(hour=5), T0.replace(hour=2)]), source)
    assert [values["n"] for _, _, values in found] == [None, 1]


def test_mapped_columns_and_string_keys() -> None:
    source = FeatureSource(format="parquet", entities={"id": "user"}, columns={"n": "count"})
    mapped = table().rename_columns(["user", "event_timestamp", "count", "x", "ok", "s", "v"])
    mapped = mapped.set_column(0, "user", pa.array(["a", "b"]))
    assert [key for key, _, _ in rows(mapped, source)] == ['id="a"', 'id="b"']


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"event_timestamp": ["2026-01-01", "soon"]}, "'soon' (its row 1 here) is not an ISO 8601"),
        ({"event_timestamp": [T0, None]}, "1 rows have no time"),
        ({"id": [1, None]}, "1 rows have no join key"),
        ({"x": [1.0, math.inf]}, "infinite values"),
        ({"n": ["1", "2"]}, "column 'n' holds string, not int values"),
        ({"v": [[1.0, math.nan], [1.0]]}, "vectors must hold finite numbers"),
        ({"event_timestamp": [math.inf, 1.0]}, "epoch seconds must be finite"),
    ],
)
def test_a_bad_value_names_the_file_the_rows_and_the_column(
    columns: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=r"f\.parquet") as caught:
        rows(table(**columns))
    assert message in caught.value.message
    assert "rows 10-11" in caught.value.message or "f.parquet: column" in caught.value.message


def test_a_missing_column_is_named() -> None:
    with pytest.raises(InvalidInput, match="column 'ok' is missing"):
        rows(table().drop_columns(["ok"]))


def test_paths_resolve_inside_the_roots_only(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path)) / "root"
    (root / "sub").mkdir(parents=True)
    policy = SourcePolicy.of([str(root)], ["dw=postgresql://u:secret@h/db"], Path("/nowhere"))

    assert policy.path("sub/../a.csv") == root / "a.csv"
    assert policy.path(str(root / "sub" / "b.csv")) == root / "sub" / "b.csv"
    for outside in ("../x.csv", "/etc/passwd", "sub/../../x.csv", "s3://bucket/x.csv"):
        with pytest.raises(InvalidInput):
            policy.path(outside)
    assert policy.database("dw") == policy.database("postgresql://u:secret@h/db")
    with pytest.raises(InvalidInput) as caught:
        policy.database("postgresql://u:other@h/db")
    assert "secret" not in caught.value.message
    assert "other" not in caught.value.message
