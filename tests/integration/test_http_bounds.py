"""Requests the OpenAPI document rules out are refused, and those it allows are taken, on the real
app: found by schemathesis with every check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from tests.fakes.models import linear_onnx


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with Platform(Settings(data_dir=tmp_path)) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            answer = await http.post(
                "/v1/registry/models/lin/versions", files={"file": ("m.onnx", linear_onnx())}
            )
            assert answer.status_code == 201, answer.text
            yield http


async def test_an_action_without_a_body_refuses_one(client: httpx.AsyncClient) -> None:
    refused = await client.post("/v1/registry/models/lin/versions/1/restore", json=[None, None])
    empty = await client.post("/v1/registry/models/lin/versions/1/restore")
    braces = await client.post("/v1/registry/models/lin/versions/1/restore", json={})

    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_input")
    assert (empty.status_code, braces.status_code) == (200, 200), (empty.text, braces.text)


async def test_a_null_version_parameter_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/monitoring/models/lin/summary", params={"version": "null"})

    assert answer.status_code == 400, answer.text
    assert answer.json()["details"] == {"field": "version"}


async def test_a_whole_number_written_as_a_float_is_an_integer(client: httpx.AsyncClient) -> None:
    whole = await client.post("/v1/monitoring/drift/lin", json={"min_rows": 30.0})
    fraction = await client.post("/v1/monitoring/drift/lin", json={"min_rows": 30.5})

    assert whole.status_code != 400, whole.text  # no reference profile yet: not a 400
    assert fraction.status_code == 400, fraction.text


async def test_list_items_are_held_to_their_bounds(client: httpx.AsyncClient) -> None:
    view = {"entities": ["not a name"], "features": [{"name": "age", "dtype": "float"}]}

    answer = await client.put("/v1/features/views/users", json=view)

    assert answer.status_code == 400, answer.text


async def test_lists_under_a_name_no_one_can_have_are_refused(client: httpx.AsyncClient) -> None:
    answers = [
        await client.get("/v1/inference/deployments/%C3%B44/rollouts"),
        await client.get("/v1/monitoring/drift/%C3%B44"),
        await client.get("/v1/monitoring/drift/lin:99999999999"),
    ]

    assert [a.status_code for a in answers] == [400, 400, 400], [a.text for a in answers]
