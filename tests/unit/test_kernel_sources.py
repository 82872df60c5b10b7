"""The kernel's source readers: what may be read, column kinds, files in chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.kernel.sources import FileReader, SourcePolicy, check_columns, fits
from contracts.common import InvalidInput

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("number", [pa.int32(), pa.float32(), pa.decimal128(5, 2), pa.bool_()], [pa.string()]),
        ("scalar", [pa.int64(), pa.bool_(), pa.string(), pa.large_string()], [pa.list_(pa.int8())]),
        ("entity", [pa.int64(), pa.string()], [pa.float64(), pa.null()]),
        ("any", [pa.timestamp("us"), pa.list_(pa.string()), pa.null()], []),
    ],
)
def test_kinds_take_the_types_that_hold_their_values(
    kind: str, good: list[object], bad: list[object]
) -> None:
    assert all(fits(kind, t) for t in good)
    assert not any(fits(kind, t) for t in bad)


def test_a_missing_or_mistyped_column_is_named() -> None:
    schema = pa.schema([("a", pa.float64()), ("when", pa.timestamp("us"))])
    with pytest.raises(InvalidInput, match=r"f\.parquet: column 'b' is missing") as missing:
        check_columns(schema, "f.parquet", {"a": "number", "b": "number"})
    with pytest.raises(InvalidInput, match=r"column 'when' holds timestamp.*not numbers"):
        check_columns(schema, "f.parquet", {"when": "number"})
    assert missing.value.details == {"column": "b"}


def test_paths_resolve_under_the_roots_and_errors_name_the_field(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    policy = SourcePolicy.of([str(root)], [], tmp_path)

    assert policy.path("sub/../a.parquet") == root / "a.parquet"
    assert policy.shown(root / "sub" / "b.parquet") == "sub/b.parquet"
    for outside in ("../x.parquet", "/etc/passwd", "s3://bucket/x.parquet"):
        with pytest.raises(InvalidInput) as caught:
            policy.path(outside, field="output.path")
        assert caught.value.details == {"field": "output.path"}
    assert SourcePolicy.of([], [], tmp_path).roots == (tmp_path.resolve(),)


def test_a_directory_is_read_file_by_file_in_chunks_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "y": ["a", "b", "c"]}), tmp_path / "d/1.parquet")
    pq.write_table(pa.table({"x": [4.0, 5.0], "y": ["d", "e"]}), tmp_path / "d/2.parquet")
    policy = SourcePolicy.of([str(tmp_path)], [], tmp_path)
    reader = FileReader("d", "parquet", policy, {"x": "number"})
    reader.check()

    chunks = list(reader.chunks(None, 0, 2))

    assert reader.total() == 5
    assert [(c.where, c.first, c.table.num_rows) for c in chunks] == [
        ("d/1.parquet", 0, 2),
        ("d/1.parquet", 2, 1),
        ("d/2.parquet", 0, 2),
    ]
    assert chunks[0].table.column_names == ["x"]  # only the columns asked for
    with pytest.raises(InvalidInput, match="column 'z' is missing"):
        FileReader("d", "parquet", policy, {"z": "any"}).check()
    with pytest.raises(InvalidInput, match="holds no csv files"):
        FileReader("d", "csv", policy, {"x": "number"})
