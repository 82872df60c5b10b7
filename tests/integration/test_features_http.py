"""The features routes on the real app, on embedded defaults and on PostgreSQL + Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.features.settings import FeaturesSettings
from tests.conftest import REDIS_URL

NOW = datetime.now(UTC).replace(microsecond=0)


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat().replace("+00:00", "Z")


@pytest.fixture(params=["embedded", "postgres-redis"])
async def client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, modules=("features",))
    if request.param == "postgres-redis":
        settings = settings.replace(
            database_urls={"features": request.getfixturevalue("postgres_schema_url")},
            redis_prefix=request.getfixturevalue("redis_namespace") + ":",
        ).with_module(FeaturesSettings(online_store_url=REDIS_URL))
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield http


async def put_users(client: httpx.AsyncClient) -> None:
    answer = await client.put(
        "/v1/features/views/users",
        json={
            "entities": ["user_id"],
            "features": [{"name": "age", "dtype": "float"}, {"name": "city", "dtype": "string"}],
            "ttl_seconds": 86400,
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 1


async def test_push_then_read_online_in_feasts_shape(client: httpx.AsyncClient) -> None:
    await put_users(client)
    pushed = await client.post(
        "/v1/features/views/users/rows",
        json={
            "rows": [
                {"user_id": 1, "age": 30.0, "city": "Lyon", "event_timestamp": ago(hours=1)},
                {"user_id": 2, "age": 41, "event_timestamp": ago(hours=2)},
            ],
            "to": "online_and_offline",
        },
    )
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["rows"] == 2

    answer = await client.post(
        "/v1/features/online",
        json={"features": ["users:age", "users:city"], "entities": {"user_id": [1, 2, 3]}},
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["metadata"]["feature_names"] == ["user_id", "users:age", "users:city"]
    assert body["results"][0]["values"] == [1, 2, 3]
    assert body["results"][1]["values"] == [30.0, 41.0, None]
    assert body["results"][2]["statuses"] == ["PRESENT", "NULL_VALUE", "NOT_FOUND"]
    assert body["results"][1]["event_timestamps"][0] == ago(hours=1)


async def test_historical_rows_come_back_in_request_order(client: httpx.AsyncClient) -> None:
    await put_users(client)
    rows = [
        {"user_id": 1, "age": 20.0, "event_timestamp": ago(hours=10)},
        {"user_id": 1, "age": 21.0, "event_timestamp": ago(hours=5)},
    ]
    await client.post("/v1/features/views/users/rows", json={"rows": rows, "to": "offline"})

    answer = await client.post(
        "/v1/features/historical",
        json={
            "features": ["users:age"],
            "entity_rows": [
                {"user_id": 1, "event_timestamp": ago(hours=1)},
                {"user_id": 1, "event_timestamp": ago(hours=7)},
                {"user_id": 1, "event_timestamp": ago(hours=11)},
            ],
        },
    )

    assert answer.status_code == 200, answer.text
    assert [r["users:age"] for r in answer.json()["rows"]] == [21.0, 20.0, None]
    online = await client.post(
        "/v1/features/online", json={"features": ["users:age"], "entities": {"user_id": [1]}}
    )
    assert online.json()["results"][1]["statuses"] == ["NOT_FOUND"]  # pushed offline only


async def test_bulk_push_streams_progress_lines(client: httpx.AsyncClient) -> None:
    await put_users(client)
    rows = [{"user_id": i, "age": float(i), "event_timestamp": ago(hours=1)} for i in range(25)]

    answer = await client.post(
        "/v1/features/views/users/rows",
        json={"rows": rows, "chunk_rows": 10},
        headers={"accept": "application/x-ndjson"},
    )

    assert answer.status_code == 200, answer.text
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [line["rows_done"] for line in lines] == [10, 20, 25]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("put", "/v1/features/views/users", b"{", 400, "malformed JSON"),
        ("put", "/v1/features/views/users", {"entities": ["id"]}, 400, "features"),
        ("put", "/v1/features/views/.hidden", {"entities": ["id"], "features": []}, 400, "invalid"),
        ("post", "/v1/features/views/nope/rows", {"rows": [{"user_id": 1}]}, 404, "nope"),
        ("post", "/v1/features/online", {"features": ["users:age"]}, 400, "entities"),
        ("post", "/v1/features/online", {"features": ["x:y"], "entities": {"id": [1]}}, 404, "x"),
        (
            "post",
            "/v1/features/historical",
            {"features": ["users:age"], "entity_rows": []},
            400,
            None,
        ),
        ("get", "/v1/features/views/nope", None, 404, "nope"),
        ("get", "/v1/features/services/nope", None, 404, "nope"),
        ("get", "/v1/features/transform-states/nope", None, 404, "nope"),
    ],
)
async def test_bad_requests_get_clear_errors(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: object,
    status: int,
    message: str | None,
) -> None:
    await put_users(client)
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    answer = await client.request(method, path, **(kwargs if body is not None else {}))
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["code"]
    assert error["error"]
    if message:
        assert message in error["error"]


async def test_a_bad_row_names_its_index_and_nothing_is_written(client: httpx.AsyncClient) -> None:
    await put_users(client)
    rows = [
        {"user_id": 1, "age": 1.0, "event_timestamp": ago(hours=1)},
        {"user_id": 2, "age": "x", "event_timestamp": ago(hours=1)},
    ]
    answer = await client.post("/v1/features/views/users/rows", json={"rows": rows})
    assert answer.status_code == 400
    assert answer.json()["details"] == {"row": 1, "field": "age"}
    online = await client.post(
        "/v1/features/online", json={"features": ["users:age"], "entities": {"user_id": [1]}}
    )
    assert online.json()["results"][1]["statuses"] == ["NOT_FOUND"]


async def test_services_are_versioned_and_listed(client: httpx.AsyncClient) -> None:
    await put_users(client)
    spec = {
        "features": ["users:age", "users:city"],
        "transforms": [
            {"type": "standardize", "input": "users:age"},
            {"type": "one_hot", "input": "users:city"},
        ],
    }
    first = await client.put("/v1/features/services/churn", json=spec)
    same = await client.put("/v1/features/services/churn", json=spec)
    changed = await client.put(
        "/v1/features/services/churn", json={**spec, "description": "churn model inputs"}
    )
    assert [a.json()["version"] for a in (first, same, changed)] == [1, 1, 2]
    listed = await client.get("/v1/features/services")
    assert [s["name"] for s in listed.json()["items"]] == ["churn"]
    old = await client.get("/v1/features/services/churn", params={"version": 1})
    assert old.json()["description"] == ""
