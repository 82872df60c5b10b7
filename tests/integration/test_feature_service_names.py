"""Online and historical reads name their feature service ``service``, as the contract does, over
HTTP too; ``feature_service``, the name the HTTP bodies used first, still works for existing
callers, and the two given with different values are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings

ROWS = [
    {"user_id": 1, "event_timestamp": "2026-01-01T00:00:00Z", "age": 31.0},
    {"user_id": 2, "event_timestamp": "2026-01-01T00:00:00Z", "age": 42.0},
]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with Platform(Settings(data_dir=tmp_path, modules=("features",))) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            view = {"entities": ["user_id"], "features": [{"name": "age", "dtype": "float"}]}
            assert (await http.put("/v1/features/views/users", json=view)).status_code == 200
            pushed = await http.post("/v1/features/views/users/rows", json={"rows": ROWS})
            assert pushed.status_code == 200, pushed.text
            service = {"features": ["users:age"]}
            assert (await http.put("/v1/features/services/churn", json=service)).status_code == 200
            yield http


async def online(client: httpx.AsyncClient, **names: str) -> httpx.Response:
    return await client.post("/v1/features/online", json={**names, "entities": {"user_id": [1, 2]}})


async def historical(client: httpx.AsyncClient, **names: str) -> httpx.Response:
    rows = [{"user_id": 2, "event_timestamp": "2026-02-01T00:00:00Z"}]
    return await client.post("/v1/features/historical", json={**names, "entity_rows": rows})


def ages(answer: httpx.Response) -> Any:
    assert answer.status_code == 200, answer.text
    return answer.json()["results"][1]["values"]


@pytest.mark.parametrize(
    "names",
    [
        {"service": "churn"},
        {"feature_service": "churn"},
        {"service": "churn", "feature_service": "churn"},
    ],
    ids=["service", "feature_service", "both-alike"],
)
async def test_online_reads_take_either_name(
    client: httpx.AsyncClient, names: dict[str, str]
) -> None:
    assert ages(await online(client, **names)) == [31.0, 42.0]


@pytest.mark.parametrize("name", ["service", "feature_service"])
async def test_historical_reads_take_either_name(client: httpx.AsyncClient, name: str) -> None:
    answer = await historical(client, **{name: "churn"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"][0]["users:age"] == 42.0


async def test_two_different_services_are_refused(client: httpx.AsyncClient) -> None:
    answers = [
        await online(client, service="churn", feature_service="other"),
        await historical(client, service="churn", feature_service="other"),
    ]

    assert [a.status_code for a in answers] == [400, 400], [a.text for a in answers]
    assert all(a.json()["code"] == "invalid_input" for a in answers)
    assert "feature_service" in answers[0].json()["error"]
