"""Feature views fed from Parquet and CSV files and PostgreSQL tables: materialization into the
offline and online stores, embedded and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.features import store
from app.modules.features.service import LocalFeaturesService
from app.modules.features.settings import FeaturesSettings
from contracts.common import InvalidInput
from contracts.features import (
    Feature,
    FeatureSource,
    GetHistoricalFeatures,
    GetMaterialization,
    GetOnlineFeatures,
    Materialization,
    Materialize,
    PutFeatureView,
)
from tests.conftest import REDIS_URL

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEATURES = [
    Feature(name="clicks", dtype="int"),
    Feature(name="ctr", dtype="float"),
    Feature(name="country", dtype="string"),
]
REFS = ["users:clicks", "users:ctr", "users:country"]


def source_rows(entities: int = 30, events: int = 4, offset_h: int = 0) -> list[dict[str, Any]]:
    """Rows of ``entities`` users, ``events`` each, in no particular order."""
    rows = []
    for e in range(events):
        for user in range(entities):
            at = T0 + timedelta(hours=offset_h + e * 10 + user % 7)
            rows.append(
                {
                    "user_id": user,
                    "event_timestamp": at,
                    "clicks": user * 100 + e + offset_h,
                    "ctr": (user + 1) / (e + 2),
                    "country": ["fr", "de", "us"][(user + e) % 3],
                }
            )
    rows.reverse()
    return rows


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


def latest(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        kept = found.get(row["user_id"])
        if kept is None or row["event_timestamp"] > kept["event_timestamp"]:
            found[row["user_id"]] = row
    return found


def as_of(rows: list[dict[str, Any]], user: int, moment: datetime) -> dict[str, Any] | None:
    """The in-memory reference of a point-in-time read."""
    before = [r for r in rows if r["user_id"] == user and r["event_timestamp"] <= moment]
    return max(before, key=lambda r: r["event_timestamp"]) if before else None


@pytest.fixture(params=["embedded", "postgres_redis"])
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    down = "down=postgresql://quarry@127.0.0.1:1/nothing"  # configured, never answering
    config = FeaturesSettings(schedule_check_s=3600, source_databases=(down,))
    settings = Settings(data_dir=tmp_path / "data", modules=("features",), log_level="WARNING")
    if request.param == "postgres_redis":
        url = str(request.getfixturevalue("postgres_schema_url"))
        prefix = f"{request.getfixturevalue('redis_namespace')}:"
        settings = settings.replace(database_urls={"features": url}, redis_prefix=prefix)
        config = FeaturesSettings(
            online_store_url=REDIS_URL, schedule_check_s=3600, source_databases=(f"dw={url}", down)
        )
    running = Platform(settings.with_module(config))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def data(platform: Platform, name: str) -> Path:
    """A path in the platform's data directory (the one source root by default)."""
    return platform.settings.data_dir / name


def features(platform: Platform) -> LocalFeaturesService:
    service = platform.built["features"].service
    assert isinstance(service, LocalFeaturesService)
    return service


async def finished(platform: Platform, run: Materialization) -> Materialization:
    client = platform.client("features", caller="tests")
    for _ in range(600):
        run = await client.get_materialization(GetMaterialization(id=run.id))
        if run.status in ("succeeded", "failed"):
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"materialization {run.id} did not finish: {run}")


async def materialize(platform: Platform, view: str, **changes: Any) -> Materialization:
    client = platform.client("features", caller="tests")
    return await finished(platform, await client.materialize(Materialize(view=view, **changes)))


async def put_view(platform: Platform, name: str = "users", **source: Any) -> None:
    client = platform.client("features", caller="tests")
    await client.put_view(
        PutFeatureView(
            name=name, entities=["user_id"], features=FEATURES, source=FeatureSource(**source)
        )
    )


async def stored(platform: Platform, view: str = "users") -> list[tuple[Any, ...]]:
    """Every offline row of ``view`` (key, time, values)."""
    table = store.offline_rows

    def read(conn: Any) -> list[tuple[Any, ...]]:
        query = sa.select(table.c.entity_key, table.c.event_ts, table.c["values"]).where(
            table.c.view == view
        )
        return sorted(tuple(r) for r in conn.execute(query))

    return await features(platform)._db.read(read)


async def online(platform: Platform, users: list[int], view: str = "users") -> list[list[Any]]:
    client = platform.client("features", caller="tests")
    refs = [r.replace("users:", f"{view}:") for r in REFS]
    answer = await client.get_online(
        GetOnlineFeatures(features=refs, entities={"user_id": list(users)})
    )
    return [column.values for column in answer.results[1:]]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
async def test_a_file_view_materializes_latest_online_and_point_in_time_offline(
    platform: Platform, suffix: str
) -> None:
    rows = source_rows()
    write(data(platform, f"users{suffix}"), rows)
    await put_view(platform, format=suffix[1:], path=f"users{suffix}")

    run = await materialize(platform, "users", chunk_rows=37)

    assert (run.status, run.error, run.rows_done, run.percent) == ("succeeded", None, 120, 100.0)
    users = list(range(30))
    newest = latest(rows)
    assert await online(platform, users) == [
        [newest[u]["clicks"] for u in users],
        [newest[u]["ctr"] for u in users],
        [newest[u]["country"] for u in users],
    ]
    moments = [T0 + timedelta(hours=h) for h in (3, 12, 25, 70)]
    entity_rows = [{"user_id": u, "event_timestamp": m.isoformat()} for u in users for m in moments]
    client = platform.client("features", caller="tests")
    historical = await client.get_historical(
        GetHistoricalFeatures(features=REFS, entity_rows=entity_rows)
    )
    for asked, answer in zip(entity_rows, historical.rows, strict=True):
        expected = as_of(
            rows, int(str(asked["user_id"])), datetime.fromisoformat(str(asked["event_timestamp"]))
        )
        assert answer["users:clicks"] == (None if expected is None else expected["clicks"])
        assert answer["users:country"] == (None if expected is None else expected["country"])
    assert len(await stored(platform)) == 120


async def test_a_rerun_adds_nothing_and_new_rows_arrive_incrementally(
    platform: Platform,
) -> None:
    rows = source_rows()
    write(data(platform, "users/part-0.parquet"), rows)
    await put_view(platform, format="parquet", path="users")
    cut = T0 + timedelta(hours=60)
    first = await materialize(platform, "users", end=cut)
    before = await stored(platform)

    again = await materialize(platform, "users", start=T0 - timedelta(days=1), end=cut)
    same = await materialize(platform, "users", end=cut)

    assert first.watermark == cut
    assert (again.status, same.status) == ("succeeded", "succeeded")
    assert (first.rows_written, again.rows_written, same.rows_written) == (120, 120, 0)
    assert await stored(platform) == before
    newer = source_rows(entities=5, events=1, offset_h=100)
    write(data(platform, "users/part-1.parquet"), newer)
    latest_run = await materialize(platform, "users")  # from the watermark to now
    assert len(await stored(platform)) == len(before) + 5
    assert latest_run.watermark is not None
    assert latest_run.watermark > cut
    assert (await online(platform, [0, 4, 5]))[0] == [100, 500, 5 * 100 + 3]


async def test_created_timestamp_breaks_ties_and_an_older_event_never_overwrites_online(
    platform: Platform,
) -> None:
    at = T0 + timedelta(hours=5)
    rows = [
        {
            "user_id": 1,
            "event_timestamp": at,
            "created": at + timedelta(minutes=2),
            "clicks": 2,
            "ctr": 0.2,
            "country": "fr",
        },
        {
            "user_id": 1,
            "event_timestamp": at,
            "created": at + timedelta(minutes=9),
            "clicks": 9,
            "ctr": 0.9,
            "country": "de",
        },
        {
            "user_id": 1,
            "event_timestamp": at,
            "created": at + timedelta(minutes=1),
            "clicks": 1,
            "ctr": 0.1,
            "country": "us",
        },
    ]
    write(data(platform, "ties.parquet"), rows)
    await put_view(platform, format="parquet", path="ties.parquet", created_timestamp="created")
    client = platform.client("features", caller="tests")
    from contracts.features import PushRows

    await materialize(platform, "users")
    assert await online(platform, [1]) == [[9], [0.9], ["de"]]

    newer = at + timedelta(hours=1)
    await client.push(
        PushRows(
            view="users",
            rows=[
                {
                    "user_id": 1,
                    "event_timestamp": newer.isoformat(),
                    "clicks": 50,
                    "ctr": 0.5,
                    "country": "fr",
                }
            ],
        )
    )
    await materialize(platform, "users", start=T0)
    assert await online(platform, [1]) == [[50], [0.5], ["fr"]]


async def test_a_crash_mid_run_then_a_rerun_ends_as_one_clean_run(platform: Platform) -> None:
    write(data(platform, "users.parquet"), source_rows())
    await put_view(platform, "users", format="parquet", path="users.parquet")
    await put_view(platform, "clean", format="parquet", path="users.parquet")
    materializer = features(platform)._materializer
    assert materializer is not None
    real, chunks = materializer._write, 0

    async def crash_after_two(view: Any, rows: Any) -> object:
        nonlocal chunks
        chunks += 1
        if chunks > 2:
            raise RuntimeError("the worker died")
        return await real(view, rows)

    materializer._write = crash_after_two
    crashed = await materialize(platform, "users", chunk_rows=25)
    materializer._write = real
    rerun = await materialize(platform, "users", chunk_rows=25)
    clean = await materialize(platform, "clean", chunk_rows=25)

    assert (crashed.status, crashed.watermark) == ("failed", None)
    assert "the worker died" in (crashed.error or "")
    assert (rerun.status, clean.status) == ("succeeded", "succeeded")
    assert await stored(platform, "users") == await stored(platform, "clean")
    assert len(await stored(platform, "users")) == 120
    users = list(range(30))
    assert await online(platform, users, "users") == await online(platform, users, "clean")


async def test_a_bad_value_fails_the_run_naming_file_rows_and_column(platform: Platform) -> None:
    rows: list[dict[str, Any]] = [
        {**row, "event_timestamp": row["event_timestamp"].isoformat()} for row in source_rows()
    ]
    rows[7]["event_timestamp"] = "yesterday"
    write(data(platform, "users.csv"), rows)
    await put_view(platform, format="csv", path="users.csv")

    run = await materialize(platform, "users", chunk_rows=5)

    assert (run.status, run.watermark, run.rows_done) == ("failed", None, 5)
    assert "users.csv, rows 5-9, column 'event_timestamp'" in (run.error or "")
    assert "'yesterday'" in (run.error or "")
    assert len(await stored(platform)) == 5  # the bad chunk left nothing behind


async def test_a_wrong_type_in_a_later_file_or_a_vanished_file_fails_the_run(
    platform: Platform,
) -> None:
    write(data(platform, "users/part-0.parquet"), source_rows(entities=3, events=1))
    await put_view(platform, format="parquet", path="users")
    bad = [{**row, "clicks": "many"} for row in source_rows(entities=3, events=1)]
    write(data(platform, "users/part-1.parquet"), bad)

    mistyped = await materialize(platform, "users")
    await put_view(platform, "gone", format="parquet", path="users/part-0.parquet")
    data(platform, "users/part-0.parquet").unlink()
    vanished = await materialize(platform, "gone")

    assert mistyped.status == "failed"
    assert "part-1.parquet" in (mistyped.error or "")
    assert "'clicks'" in (mistyped.error or "")
    assert vanished.status == "failed"
    assert "part-0.parquet" in (vanished.error or "")


async def test_a_postgresql_table_or_query_source(
    platform: Platform, request: pytest.FixtureRequest
) -> None:
    if "postgres" not in request.node.callspec.params["platform"]:
        pytest.skip("a PostgreSQL source needs PostgreSQL")
    rows = source_rows()
    engine = sa.create_engine(
        platform.settings.database_url("features").replace("postgresql:", "postgresql+psycopg:")
    )
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE user_stats (user_id bigint, event_timestamp timestamptz,"
            " clicks bigint, ctr double precision, country text)"
        )
        conn.execute(
            sa.text(
                "INSERT INTO user_stats VALUES"
                " (:user_id, :event_timestamp, :clicks, :ctr, :country)"
            ),
            rows,
        )
    engine.dispose()
    await put_view(platform, "users", format="postgresql", database="dw", table="user_stats")
    query = "SELECT user_id, event_timestamp AS ts, clicks, ctr, country FROM user_stats"
    await put_view(
        platform,
        "even",
        format="postgresql",
        database="dw",
        query=query + " WHERE clicks % 2 = 0",
        event_timestamp="ts",
    )

    table_run = await materialize(platform, "users", chunk_rows=50)
    query_run = await materialize(platform, "even")

    assert (table_run.status, table_run.rows_done, table_run.rows_total) == ("succeeded", 120, 120)
    assert query_run.status == "succeeded", query_run.error
    newest = latest(rows)
    users = list(range(30))
    assert (await online(platform, users))[0] == [newest[u]["clicks"] for u in users]
    even = latest([r for r in rows if r["clicks"] % 2 == 0])
    assert (await online(platform, users, "even"))[0] == [
        even[u]["clicks"] if u in even else None for u in users
    ]
    spine = await platform.client("features", caller="tests").get_historical(
        GetHistoricalFeatures(
            features=["users:clicks"],
            entity_source=FeatureSource(format="postgresql", database="dw", table="user_stats"),
            chunk_rows=50,
        )
    )
    assert len(spine.rows) == 120
    assert all(r["users:clicks"] == r["clicks"] for r in spine.rows)  # each row's own event


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    down = "down=postgresql://quarry@127.0.0.1:1/nothing"
    settings = Settings(data_dir=tmp_path / "data", modules=("features",), log_level="WARNING")
    running = Platform(settings.with_module(FeaturesSettings(source_databases=(down,))))
    await running.start()
    transport = httpx.ASGITransport(app=create_app(running, host="127.0.0.1"))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
            yield client
    finally:
        await running.stop()


def view_body(**source: Any) -> dict[str, Any]:
    return {
        "entities": ["user_id"],
        "features": [{"name": f.name, "dtype": f.dtype} for f in FEATURES],
        "source": source,
    }


async def test_materialize_over_http(http: httpx.AsyncClient, tmp_path: Path) -> None:
    write(tmp_path / "data" / "users.parquet", source_rows())
    put = await http.put(
        "/v1/features/views/users", json=view_body(format="parquet", path="users.parquet")
    )
    plain = await http.put("/v1/features/views/plain", json={**view_body(), "source": None})

    queued = await http.post("/v1/features/views/users/materialize")
    run_id = queued.json()["id"]
    for _ in range(600):
        run = await http.get(f"/v1/features/materializations/{run_id}")
        if run.json()["status"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    spine = {"format": "parquet", "path": "users.parquet"}
    historical = await http.post(
        "/v1/features/historical", json={"features": ["users:ctr"], "entity_source": spine}
    )
    empty = await http.post("/v1/features/historical", json={"features": ["users:ctr"]})
    windowed = await http.post(
        "/v1/features/views/users/materialize",
        json={"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
    )
    sourceless = await http.post("/v1/features/views/plain/materialize", json={})
    huge = await http.post("/v1/features/views/users/materialize", json={"chunk_rows": 2**31 - 1})
    unknown = await http.post("/v1/features/views/nobody/materialize", json={})
    no_run = await http.get("/v1/features/materializations/nothing")

    assert (put.status_code, plain.status_code) == (200, 200), put.text
    assert put.json()["source"]["path"] == "users.parquet"
    assert (queued.status_code, queued.json()["status"]) == (202, "queued")
    assert run.json()["status"] == "succeeded", run.json()
    assert (run.json()["rows_done"], run.json()["percent"]) == (120, 100.0)
    assert run.json()["rows_per_s"] > 0
    assert windowed.status_code == 400
    assert huge.status_code == 400
    assert historical.status_code == 200, historical.text
    assert [r["users:ctr"] for r in historical.json()["rows"][:3]] == [
        r["ctr"] for r in source_rows()[:3]
    ]
    assert empty.status_code == 400
    assert sourceless.status_code == 400
    assert "no source" in sourceless.json()["error"]
    assert (unknown.status_code, no_run.status_code) == (404, 404)


async def test_sources_that_may_not_or_cannot_be_read_are_refused(
    http: httpx.AsyncClient, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    write(root / "users.parquet", source_rows(entities=2, events=1))
    write(tmp_path / "outside.parquet", source_rows(entities=2, events=1))
    (root / "link.parquet").symlink_to(tmp_path / "outside.parquet")
    (root / "linked").symlink_to(tmp_path, target_is_directory=True)
    write(
        root / "nocountry.parquet",
        [{**r, "country": None} | {"country": 1} for r in source_rows(2, 1)],
    )
    write(
        root / "short.csv", [{k: v for k, v in r.items() if k != "ctr"} for r in source_rows(2, 1)]
    )
    cases = {
        "absolute elsewhere": (
            {"format": "csv", "path": "/etc/passwd"},
            "outside the source roots",
        ),
        "dot-dot": (
            {"format": "parquet", "path": "../outside.parquet"},
            "outside the source roots",
        ),
        "file link out": (
            {"format": "parquet", "path": "link.parquet"},
            "outside the source roots",
        ),
        "dir link out": ({"format": "parquet", "path": "linked"}, "outside the source roots"),
        "a URL": ({"format": "parquet", "path": "file:///etc/passwd"}, "only local paths"),
        "missing": ({"format": "parquet", "path": "nothing.parquet"}, "does not exist"),
        "NUL": ({"format": "parquet", "path": "a\u0000b.parquet"}, "not a usable path"),
        "too long": ({"format": "parquet", "path": "a" * 5000}, "not a usable path"),
        "no column": ({"format": "csv", "path": "short.csv"}, "column 'ctr' is missing"),
        "wrong type": ({"format": "parquet", "path": "nocountry.parquet"}, "column 'country'"),
        "unknown mapping": (
            {"format": "parquet", "path": "users.parquet", "columns": {"age": "x"}},
            "not a feature of the view",
        ),
        "unconfigured database": (
            {"format": "postgresql", "database": "postgresql://x@127.0.0.1/db", "table": "t"},
            "is not configured",
        ),
        "database down": (
            {"format": "postgresql", "database": "down", "table": "t"},
            "does not answer",
        ),
        "bad table name": (
            {"format": "postgresql", "database": "down", "table": "t; DROP TABLE x"},
            "is not a name",
        ),
    }
    for case, (source, message) in cases.items():
        answer = await http.put("/v1/features/views/users", json=view_body(**source))
        assert answer.status_code == 400, (case, answer.text)
        assert message in answer.json()["error"], (case, answer.json())
    assert (await http.get("/v1/features/views/users")).status_code == 404


async def test_a_view_with_a_schedule_materializes_by_itself(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", modules=("features",), log_level="WARNING")
    running = Platform(settings.with_module(FeaturesSettings(schedule_check_s=0.1)))
    await running.start()
    try:
        write(data(running, "users.parquet"), source_rows())
        await put_view(
            running, format="parquet", path="users.parquet", materialize_every_seconds=3600
        )
        for _ in range(400):
            values = await online(running, [0])
            if values[0] != [None]:
                break
            await asyncio.sleep(0.05)
        runs = await features(running)._db.read(
            lambda conn: conn.execute(sa.select(store.materializations.c.status)).all()
        )
    finally:
        await running.stop()

    assert values[0] == [latest(source_rows())[0]["clicks"]]
    assert len(runs) == 1  # once an hour: one run so far


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
async def test_historical_entity_rows_read_from_a_source_equal_the_same_rows_inline(
    platform: Platform, suffix: str
) -> None:
    rows = source_rows()
    write(data(platform, "users.parquet"), rows)
    await put_view(platform, format="parquet", path="users.parquet")
    await materialize(platform, "users")
    moments = [T0 + timedelta(hours=h) for h in (3, 25)]
    entity_rows = [
        {"user_id": u, "event_timestamp": m, "label": u % 2} for u in range(30) for m in moments
    ]
    write(data(platform, f"spine{suffix}"), entity_rows)
    client = platform.client("features", caller="tests")

    from_source = await client.get_historical(
        GetHistoricalFeatures(
            features=REFS,
            entity_source=FeatureSource(format=suffix[1:], path=f"spine{suffix}"),
            chunk_rows=7,
        )
    )
    inline = await client.get_historical(
        GetHistoricalFeatures(
            features=REFS,
            entity_rows=[
                {**r, "event_timestamp": r["event_timestamp"].isoformat()} for r in entity_rows
            ],
        )
    )

    assert len(from_source.rows) == len(entity_rows)
    for got, want in zip(from_source.rows, inline.rows, strict=True):
        assert datetime.fromisoformat(str(got.pop("event_timestamp"))) == datetime.fromisoformat(
            str(want.pop("event_timestamp"))
        )
        assert got == want
    with pytest.raises(InvalidInput, match="outside the source roots"):
        await client.get_historical(
            GetHistoricalFeatures(
                features=REFS, entity_source=FeatureSource(format="csv", path="/etc/passwd")
            )
        )
