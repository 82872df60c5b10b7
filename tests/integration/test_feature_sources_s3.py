"""Feature view sources and entity sources in an S3 bucket (a local moto server), read under
the ``s3://`` entries of the source roots with the artifact store's AWS variables."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import ConfigError, Settings
from app.modules.features.settings import FeaturesSettings
from app.modules.features.sources import SourcePolicy
from contracts.common import Conflict, InvalidInput
from contracts.features import FeatureSource, GetHistoricalFeatures, PutFeatureView, Value
from tests.integration.test_feature_sources import (
    FEATURES,
    REFS,
    T0,
    as_of,
    latest,
    materialize,
    online,
    source_rows,
)

MISSING_BUCKET = "quarry-no-such-bucket"


def put_object(s3: Any, bucket: str, key: str, rows: list[dict[str, Any]]) -> None:
    sink = io.BytesIO()
    table = pa.Table.from_pylist(rows)
    if key.endswith(".csv"):
        pacsv.write_csv(table, sink)
    else:
        pq.write_table(table, sink)
    s3.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())


def settings(tmp_path: Path, bucket: str) -> Settings:
    roots = (str(tmp_path / "data"), f"s3://{bucket}/exports", f"s3://{MISSING_BUCKET}")
    config = FeaturesSettings(schedule_check_s=3600, source_roots=roots)
    base = Settings(data_dir=tmp_path / "data", modules=("features",), log_level="WARNING")
    return base.with_module(config)


@pytest.fixture
async def platform(tmp_path: Path, bucket: str) -> AsyncIterator[Platform]:
    (tmp_path / "data").mkdir()
    running = Platform(settings(tmp_path, bucket))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def put_view(platform: Platform, path: str, format: str = "parquet") -> None:
    await platform.client("features", caller="tests").put_view(
        PutFeatureView(
            name="users",
            entities=["user_id"],
            features=FEATURES,
            source=FeatureSource(format=format, path=path),  # type: ignore[arg-type]
        )
    )


async def test_a_folder_of_parquet_objects_materializes_like_a_local_file(
    platform: Platform, s3: Any, bucket: str
) -> None:
    rows = source_rows()
    put_object(s3, bucket, "exports/users/part-0.parquet", rows[:70])
    put_object(s3, bucket, "exports/users/part-1.parquet", rows[70:])
    s3.put_object(Bucket=bucket, Key="exports/users/_SUCCESS", Body=b"")
    await put_view(platform, f"s3://{bucket}/exports/users/")

    run = await materialize(platform, "users", chunk_rows=25)

    assert (run.status, run.error, run.rows_done, run.percent) == ("succeeded", None, 120, 100.0)
    users = list(range(30))
    newest = latest(rows)
    assert await online(platform, users) == [
        [newest[u]["clicks"] for u in users],
        [newest[u]["ctr"] for u in users],
        [newest[u]["country"] for u in users],
    ]


async def test_entity_rows_from_a_csv_object(platform: Platform, s3: Any, bucket: str) -> None:
    rows = source_rows()
    put_object(s3, bucket, "exports/users.csv", rows)
    await put_view(platform, f"s3://{bucket}/exports/users.csv", format="csv")
    run = await materialize(platform, "users")
    spine: list[dict[str, Any]] = [
        {"user_id": u, "event_timestamp": T0 + timedelta(hours=25)} for u in range(30)
    ]
    put_object(s3, bucket, "exports/spine/part-0.csv", spine)

    answer = await platform.client("features", caller="tests").get_historical(
        GetHistoricalFeatures(
            features=REFS,
            entity_source=FeatureSource(format="csv", path=f"s3://{bucket}/exports/spine"),
            chunk_rows=7,
        )
    )

    assert (run.status, run.rows_total) == ("succeeded", None)  # a CSV object is not counted
    assert run.rows_done == 120
    for asked, got in zip(spine, answer.rows, strict=True):
        expected = as_of(rows, asked["user_id"], asked["event_timestamp"])
        assert got["users:clicks"] == (None if expected is None else expected["clicks"])


async def test_a_bad_object_fails_the_run_naming_its_url(
    platform: Platform, s3: Any, bucket: str
) -> None:
    put_object(s3, bucket, "exports/good.parquet", source_rows(entities=2, events=1))
    await put_view(platform, f"s3://{bucket}/exports/good.parquet")
    bad = [{**r, "event_timestamp": "soon"} for r in source_rows(entities=2, events=1)]
    put_object(s3, bucket, "exports/good.parquet", bad)

    run = await materialize(platform, "users")

    assert run.status == "failed"
    assert f"s3://{bucket}/exports/good.parquet, rows 0-1, column 'event_timestamp'" in str(
        run.error
    )


async def test_objects_that_may_not_or_cannot_be_read_are_refused_with_400(
    tmp_path: Path, s3: Any, bucket: str
) -> None:
    (tmp_path / "data").mkdir()
    put_object(s3, bucket, "exports/users.parquet", source_rows(entities=2, events=1))
    put_object(s3, bucket, "other/users.parquet", source_rows(entities=2, events=1))
    put_object(s3, bucket, "exports2/users.parquet", source_rows(entities=2, events=1))
    s3.put_object(Bucket=bucket, Key="exports/junk.parquet", Body=b"not parquet at all")
    s3.put_object(Bucket=bucket, Key="exports/empty/readme.txt", Body=b"nothing here")
    short = [{k: v for k, v in r.items() if k != "ctr"} for r in source_rows(2, 1)]
    put_object(s3, bucket, "exports/short.parquet", short)
    url = f"s3://{bucket}"
    cases = {
        "missing bucket": (f"s3://{MISSING_BUCKET}/x.parquet", "does not exist"),
        "missing object": (f"{url}/exports/nothing.parquet", "does not exist"),
        "not parquet": (f"{url}/exports/junk.parquet", "not readable"),
        "no files": (f"{url}/exports/empty", "holds no parquet files"),
        "no column": (f"{url}/exports/short.parquet", "column 'ctr' is missing"),
        "outside the roots": (f"{url}/other/users.parquet", "outside the s3:// source roots"),
        "a sibling prefix": (f"{url}/exports2/users.parquet", "outside the s3:// source roots"),
        "dot-dot": (f"{url}/exports/../other/users.parquet", "is not an s3://bucket/key URL"),
        "empty part": (f"{url}/exports//users.parquet", "is not an s3://bucket/key URL"),
    }
    running = Platform(settings(tmp_path, bucket))
    await running.start()
    transport = httpx.ASGITransport(app=create_app(running, host="127.0.0.1"))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            for case, (path, message) in cases.items():
                body = {
                    "entities": ["user_id"],
                    "features": [{"name": f.name, "dtype": f.dtype} for f in FEATURES],
                    "source": {"format": "parquet", "path": path},
                }
                answer = await http.put("/v1/features/views/users", json=body)
                assert answer.status_code == 400, (case, answer.text)
                assert message in answer.json()["error"], (case, answer.json())
                if case not in ("dot-dot", "empty part"):
                    assert path.rstrip("/") in answer.json()["error"], (case, answer.json())
            assert (await http.get("/v1/features/views/users")).status_code == 404
    finally:
        await running.stop()


async def test_no_s3_root_means_no_s3_source(tmp_path: Path, s3: Any, bucket: str) -> None:
    put_object(s3, bucket, "exports/users.parquet", source_rows(entities=2, events=1))
    base = Settings(data_dir=tmp_path / "data", modules=("features",), log_level="WARNING")
    running = Platform(base.with_module(FeaturesSettings(schedule_check_s=3600)))
    await running.start()
    try:
        with pytest.raises(InvalidInput, match="outside the s3:// source roots"):
            await put_view(running, f"s3://{bucket}/exports/users.parquet")
    finally:
        await running.stop()


async def test_historical_rows_written_to_an_object(
    platform: Platform, s3: Any, bucket: str
) -> None:
    rows = source_rows()
    put_object(s3, bucket, "exports/users.parquet", rows)
    await put_view(platform, f"s3://{bucket}/exports/users.parquet")
    await materialize(platform, "users")
    entity_rows: list[dict[str, Value]] = [
        {"user_id": u, "event_timestamp": (T0 + timedelta(hours=25)).isoformat()} for u in range(30)
    ]
    client = platform.client("features", caller="tests")
    output = f"s3://{bucket}/exports/training/set.parquet"

    answer = await client.get_historical(
        GetHistoricalFeatures(features=REFS, entity_rows=entity_rows, output=output, chunk_rows=8)
    )
    inline = await client.get_historical(
        GetHistoricalFeatures(features=REFS, entity_rows=entity_rows)
    )

    assert (answer.output, answer.rows_written) == (output, 30)
    body = s3.get_object(Bucket=bucket, Key="exports/training/set.parquet")["Body"].read()
    written = pq.read_table(io.BytesIO(body)).to_pylist()
    assert [r["users:clicks"] for r in written] == [r["users:clicks"] for r in inline.rows]
    with pytest.raises(Conflict, match="not a historical output"):
        await client.get_historical(
            GetHistoricalFeatures(
                features=REFS,
                entity_rows=entity_rows,
                output=f"s3://{bucket}/exports/users.parquet",
            )
        )
    with pytest.raises(InvalidInput, match="outside the s3:// source roots"):
        await client.get_historical(
            GetHistoricalFeatures(
                features=REFS, entity_rows=entity_rows, output=f"s3://{bucket}/x.parquet"
            )
        )
    with pytest.raises(InvalidInput, match="does not exist"):
        await client.get_historical(
            GetHistoricalFeatures(
                features=REFS,
                entity_rows=entity_rows,
                output=f"s3://{MISSING_BUCKET}/x.parquet",
            )
        )


@pytest.mark.parametrize(
    ("url", "root", "inside"),
    [
        ("s3://lake/exports/a.parquet", "s3://lake/exports", True),
        ("s3://lake/exports/", "s3://lake/exports/", True),
        ("s3://lake/exports/deep/a.csv", "s3://lake", True),
        ("s3://lake/exports2/a.parquet", "s3://lake/exports", False),
        ("s3://lake/export", "s3://lake/exports", False),
        ("s3://lakehouse/exports/a.parquet", "s3://lake", False),
    ],
)
def test_an_s3_url_is_inside_a_root_part_by_part(url: str, root: str, inside: bool) -> None:
    policy = SourcePolicy.of([root], [], Path("/nonexistent"))
    if inside:
        assert policy.s3_path(url) == url.removeprefix("s3://").rstrip("/")
    else:
        with pytest.raises(InvalidInput, match="outside the s3:// source roots"):
            policy.s3_path(url)


def test_a_bad_s3_root_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="QUARRY_SOURCE_ROOTS"):
        SourcePolicy.of(["s3://lake/../etc"], [], tmp_path)
