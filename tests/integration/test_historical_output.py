"""Historical retrieval written to a Parquet file under the source roots: the file holds the rows
the answer would have carried, appears whole or not at all, and never replaces a file that is
not such an output; the Python client answers a DataFrame either way."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import app
from app.bootstrap import Platform, create_app
from app.kernel import calls
from app.kernel.codec import loopback
from app.kernel.settings import Settings
from app.modules.features.settings import FeaturesSettings
from contracts.common import Conflict, InvalidInput
from contracts.features import (
    FeatureSource,
    FeaturesService,
    GetHistoricalFeatures,
    GetMaterialization,
    Materialize,
    PutFeatureView,
)
from tests.integration.test_feature_sources import (
    FEATURES,
    REFS,
    T0,
    data,
    materialize,
    platform,
    put_view,
    source_rows,
    write,
)

__all__ = ["platform"]  # the fixture, embedded and on PostgreSQL + Redis

ENTITY_ROWS: list[dict[str, Any]] = [
    {"user_id": u, "event_timestamp": (T0 + timedelta(hours=h)).isoformat(), "label": u % 2}
    for u in range(30)
    for h in (3, 25, 70)
]


async def loaded(platform: Platform) -> None:
    write(data(platform, "users.parquet"), source_rows())
    await put_view(platform, format="parquet", path="users.parquet")
    await materialize(platform, "users")


def as_written(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answered rows as the Parquet file holds them (times as datetimes)."""
    return [
        {**row, "event_timestamp": datetime.fromisoformat(row["event_timestamp"])} for row in rows
    ]


async def test_the_file_holds_the_rows_the_answer_would_carry(platform: Platform) -> None:
    await loaded(platform)
    client = platform.client("features", caller="tests")
    inline = await client.get_historical(
        GetHistoricalFeatures(features=REFS, entity_rows=ENTITY_ROWS)
    )

    answer = await client.get_historical(
        GetHistoricalFeatures(
            features=REFS, entity_rows=ENTITY_ROWS, chunk_rows=7, output="out/train.parquet"
        )
    )
    again = await client.get_historical(
        GetHistoricalFeatures(
            features=REFS[:1], entity_rows=ENTITY_ROWS, output="out/train.parquet"
        )
    )

    path = data(platform, "out/train.parquet").resolve()
    assert (answer.rows, answer.output, answer.rows_written) == ([], str(path), len(ENTITY_ROWS))
    assert again.rows_written == len(ENTITY_ROWS)  # an earlier output may be replaced
    with pytest.raises(ValueError, match="read that file"):
        answer.to_pandas()  # no rows to make a frame of
    table = pq.read_table(path)
    assert table.column_names == ["user_id", "event_timestamp", "label", "users:clicks"]
    assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.num_rows == len(ENTITY_ROWS)
    assert [p.name for p in path.parent.iterdir()] == ["train.parquet"]  # no temporary left
    full = await client.get_historical(
        GetHistoricalFeatures(features=REFS, entity_rows=ENTITY_ROWS, output="full.parquet")
    )
    written = pq.read_table(str(full.output))
    assert written.schema.field("users:clicks").type == pa.int64()
    assert written.schema.field("users:country").type == pa.string()
    assert written.to_pylist() == as_written(inline.rows)


async def test_an_entity_source_written_to_a_file(platform: Platform) -> None:
    await loaded(platform)
    spine = [
        {**row, "event_timestamp": datetime.fromisoformat(row["event_timestamp"])}
        for row in ENTITY_ROWS
    ]
    write(data(platform, "spine.parquet"), spine)
    client = platform.client("features", caller="tests")

    answer = await client.get_historical(
        GetHistoricalFeatures(
            features=REFS,
            entity_source=FeatureSource(format="parquet", path="spine.parquet"),
            chunk_rows=16,
            output="spine-features.parquet",
        )
    )

    written = pq.read_table(str(answer.output)).to_pylist()
    assert answer.rows_written == len(spine) == len(written)
    assert [(r["user_id"], r["event_timestamp"]) for r in written] == [
        (r["user_id"], r["event_timestamp"]) for r in spine
    ]


async def test_outputs_that_may_not_be_written_are_refused(platform: Platform) -> None:
    await loaded(platform)
    client = platform.client("features", caller="tests")
    data(platform, "folder.parquet").mkdir()

    def read(output: str, rows: list[dict[str, Any]] = ENTITY_ROWS) -> Any:
        return client.get_historical(
            GetHistoricalFeatures(features=REFS, entity_rows=rows, chunk_rows=10, output=output)
        )

    with pytest.raises(Conflict, match="not a historical output"):
        await read("users.parquet")  # the view's source
    with pytest.raises(Conflict, match="is a folder"):
        await read("folder.parquet")
    with pytest.raises(InvalidInput, match="outside the source roots"):
        await read("../elsewhere.parquet")
    with pytest.raises(InvalidInput, match=r"must name a \.parquet file"):
        await read("features.db")
    with pytest.raises(InvalidInput, match="s3:// source roots"):
        await read("s3://some-bucket/out.parquet")
    bad = [*ENTITY_ROWS, {"user_id": 1, "event_timestamp": "later"}]
    with pytest.raises(InvalidInput, match="is not an ISO 8601 time"):
        await read("half.parquet", bad)  # fails after 9 chunks were written
    with pytest.raises(InvalidInput, match="stream_historical streams the rows"):
        await anext(
            client.stream_historical(
                GetHistoricalFeatures(features=REFS, entity_rows=ENTITY_ROWS, output="x.parquet")
            )
        )

    assert pq.read_table(data(platform, "users.parquet")).num_rows == 120  # untouched
    assert sorted(p.name for p in data(platform, "").iterdir() if "parquet" in p.name) == [
        "folder.parquet",
        "users.parquet",
    ]


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path / "data", modules=("features",), log_level="WARNING")
    running = Platform(settings.with_module(FeaturesSettings(schedule_check_s=3600)))
    await running.start()
    await loaded(running)
    transport = httpx.ASGITransport(app=create_app(running, host="127.0.0.1"))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
            yield client
    finally:
        await running.stop()


async def test_historical_to_a_file_over_http(http: httpx.AsyncClient, tmp_path: Path) -> None:
    body = {"features": ["users:ctr"], "entity_rows": ENTITY_ROWS[:5], "output": "a/b.parquet"}

    written = await http.post("/v1/features/historical", json=body)
    conflict = await http.post("/v1/features/historical", json={**body, "output": "users.parquet"})
    outside = await http.post("/v1/features/historical", json={**body, "output": "/tmp/x.parquet"})
    empty = await http.post("/v1/features/historical", json={**body, "output": ""})

    assert written.status_code == 200, written.text
    path = (tmp_path / "data" / "a" / "b.parquet").resolve()
    assert written.json() == {"rows": [], "output": str(path), "rows_written": 5}
    assert pq.read_table(path).num_rows == 5
    assert (conflict.status_code, conflict.json()["code"]) == (409, "conflict")
    assert outside.status_code == 400
    assert empty.status_code == 400


def test_the_client_answers_a_data_frame_from_rows_or_from_the_file(tmp_path: Path) -> None:
    write(tmp_path / "users.parquet", source_rows())
    with app.connect_sync(data_dir=tmp_path, modules="features") as q:
        q.features.put_view(
            PutFeatureView(
                name="users",
                entities=["user_id"],
                features=FEATURES,
                source=FeatureSource(format="parquet", path="users.parquet"),
            )
        )
        run = q.features.materialize(Materialize(view="users"))
        for _ in range(600):
            run = q.features.get_materialization(GetMaterialization(id=run.id))
            if run.status in ("succeeded", "failed"):
                break
            time.sleep(0.05)
        request = GetHistoricalFeatures(features=REFS, entity_rows=ENTITY_ROWS)
        from_rows = q.features.historical_frame(request)
        from_file = q.features.historical_frame(
            GetHistoricalFeatures(features=REFS, entity_rows=ENTITY_ROWS, output="frame.parquet")
        )
        table = q.features.historical_table(request)

    assert run.status == "succeeded"
    assert list(from_rows.columns) == ["user_id", "event_timestamp", "label", *REFS]
    assert from_rows.equals(from_file)
    assert str(from_rows["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert table.num_rows == len(ENTITY_ROWS)


async def test_an_output_travels_as_a_remote_call_would(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", modules=("features",), log_level="WARNING")
    async with Platform(settings.with_module(FeaturesSettings(schedule_check_s=3600))) as running:
        await loaded(running)
        wire = loopback(FeaturesService, running.client("features"))
        client = calls.bind(FeaturesService, wire, module="features", caller="tests")

        answer = await client.get_historical(
            GetHistoricalFeatures(features=REFS, entity_rows=ENTITY_ROWS, output="wire.parquet")
        )
        with pytest.raises(Conflict, match="not a historical output"):
            await client.get_historical(
                GetHistoricalFeatures(
                    features=REFS, entity_rows=ENTITY_ROWS, output="users.parquet"
                )
            )

    assert answer.rows == []
    assert answer.rows_written == len(ENTITY_ROWS)
    assert pq.read_table(str(answer.output)).num_rows == len(ENTITY_ROWS)
