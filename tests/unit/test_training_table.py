"""A plain table read as a training set: columns to arrays, digests, and what a table must hold."""

from __future__ import annotations

import decimal
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.kernel.sources import SourcePolicy
from app.modules.training.dataset import JobFailed, prepare
from app.modules.training.table import check_table, describe, read_table
from contracts.common import InvalidInput
from contracts.features import FeatureSource
from contracts.training import Dataset, Split

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
csv = pytest.importorskip("pyarrow.csv")

PARQUET = FeatureSource(format="parquet", path="table.parquet")


def write(folder: Path, columns: dict[str, Any], name: str = "table.parquet") -> None:
    pq.write_table(pa.table(columns), folder / name)


def policy(folder: Path) -> SourcePolicy:
    return SourcePolicy.of([], [], folder)


def never(_make: Any) -> Any:
    raise AssertionError("a table is read without any contract call")


def test_columns_become_floats_and_labels_stay_as_they_are(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "a": [1.5, None, 3.0],
            "b": pa.array([1, 2, 3], pa.int8()),
            "c": [True, False, True],
            "d": pa.array([decimal.Decimal("0.25")] * 3, pa.decimal128(5, 2)),
            "label": ["x", "y", "x"],
        },
    )

    table = read_table(PARQUET, ["a", "b", "c", "d"], "label", "classification", policy(tmp_path))

    assert table.x.dtype == np.float32
    np.testing.assert_array_equal(
        table.x, [[1.5, 1, 1, 0.25], [np.nan, 2, 0, 0.25], [3.0, 3, 1, 0.25]]
    )
    assert table.labels == ["x", "y", "x"]


def test_the_digest_is_the_data_s_not_the_chunking_s(tmp_path: Path) -> None:
    columns = {"a": list(range(10)), "label": [i % 3 for i in range(10)]}
    write(tmp_path, columns)
    rules = policy(tmp_path)

    whole = read_table(PARQUET, ["a"], "label", "regression", rules)
    chunked = read_table(PARQUET, ["a"], "label", "regression", rules, chunk_rows=3)
    write(tmp_path, {**columns, "label": [*columns["label"][:-1], 7]})
    changed = read_table(PARQUET, ["a"], "label", "regression", rules)

    assert whole.digest == chunked.digest
    assert changed.digest != whole.digest


def test_a_csv_directory_is_read_file_after_file(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    for part, values in enumerate([[1, 2], [3]]):
        rows = pa.table({"a": values, "label": [v % 2 for v in values]})
        csv.write_csv(rows, tmp_path / "parts" / f"part-{part}.csv")
    source = FeatureSource(format="csv", path="parts")

    table = read_table(source, ["a"], "label", "classification", policy(tmp_path))

    assert table.x[:, 0].tolist() == [1, 2, 3]
    assert table.labels == [1, 0, 1]


def test_a_row_without_a_label_is_named(tmp_path: Path) -> None:
    write(tmp_path, {"a": [1, 2, 3], "label": [1, None, 0]})

    with pytest.raises(InvalidInput, match=r"1 rows have no label 'label' \(first: row 1\)"):
        read_table(PARQUET, ["a"], "label", "classification", policy(tmp_path))


@pytest.mark.parametrize(
    ("features", "label", "task", "message"),
    [
        (["a", "gone"], "label", "classification", "column 'gone' is missing"),
        (["a", "text"], "label", "classification", "column 'text' holds string, not numbers"),
        (["a"], "text", "regression", "label column 'text' holds string, not numbers"),
        (["a"], "vector", "classification", "label column 'vector' holds list"),
    ],
)
def test_check_table_names_the_column(
    tmp_path: Path, features: list[str], label: str, task: str, message: str
) -> None:
    write(
        tmp_path,
        {
            "a": [1.0],
            "label": [1],
            "text": ["x"],
            "vector": pa.array([[1.0]], pa.list_(pa.float64())),
        },
    )

    with pytest.raises(InvalidInput, match=message):
        check_table(PARQUET, features, label, task, policy(tmp_path))


def test_prepare_splits_a_table_and_records_where_it_came_from(tmp_path: Path) -> None:
    write(tmp_path, {"a": [float(i) for i in range(20)], "label": [i % 2 for i in range(20)]})
    dataset = Dataset(source=PARQUET, features=["a"], label="label")

    data = prepare(
        dataset, Split(validation=0.25), "classification", None, never, sources=policy(tmp_path)
    )

    assert (len(data.x_train), len(data.x_valid)) == (15, 5)
    assert data.classes == ["0", "1"]
    assert data.rows == 20
    assert data.feature_service is None
    assert json.loads(data.lineage["source"]) == {"format": "parquet", "path": "table.parquet"}
    assert data.valid_rows == [{"a": float(x)} for x in data.x_valid[:, 0]]


def test_missing_feature_values_fail_the_job_naming_the_column(tmp_path: Path) -> None:
    write(tmp_path, {"a": [1.0, None, 3.0, 4.0], "label": [0, 1, 0, 1]})
    dataset = Dataset(source=PARQUET, features=["a"], label="label")

    with pytest.raises(JobFailed, match=r"a \(1 rows\); fill or drop them in the source"):
        prepare(dataset, Split(), "classification", None, never, sources=policy(tmp_path))


def test_lineage_names_a_database_source_without_its_url() -> None:
    source = FeatureSource(format="postgresql", database="dw", table="public.customers")

    assert json.loads(describe(source)) == {
        "format": "postgresql",
        "database": "dw",
        "table": "public.customers",
    }
