"""`POST /v1/predict/{model_ref}` on the real app: JSON and msgpack, errors, and alias moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from contracts.registry import RegisterVersion, SetAlias
from tests.fakes.models import linear_onnx, linear_weights

ROWS = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]


def expected(seed: int) -> np.ndarray:
    weight, bias = linear_weights(seed=seed)
    return np.asarray(ROWS, dtype=np.float32) @ weight + bias


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = Settings(data_dir=tmp_path, events_poll_s=0.05)
    async with Platform(settings) as platform:
        registry = platform.client("registry", caller="tests")
        for seed in (0, 1):
            await registry.register_version(
                RegisterVersion(name="lin", artifact=linear_onnx(seed=seed))
            )
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
            yield client, registry


async def test_json_rows_in_json_rows_out(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = served
    answer = await client.post("/v1/predict/lin:1", json={"inputs": {"x": ROWS}})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"]) == ("lin", 1)
    np.testing.assert_allclose(body["outputs"]["y"], expected(0), rtol=1e-5)
    assert body["prediction_id"]


async def test_msgpack_bodies_get_msgpack_answers(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = served
    answer = await client.post(
        "/v1/predict/lin",
        content=msgspec.msgpack.encode({"inputs": {"x": ROWS}, "outputs": ["y"]}),
        headers={"content-type": "application/x-msgpack"},
    )

    assert answer.headers["content-type"].startswith("application/x-msgpack")
    body = msgspec.msgpack.decode(answer.content)
    assert body["version"] == 2
    np.testing.assert_allclose(body["outputs"]["y"], expected(1), rtol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        (b"{not json", 400, "invalid_input", "malformed JSON"),
        (b"", 400, "invalid_input", "empty body"),
        (b'{"inputs": {"x": [[1, 2], [3]]}}', 400, "invalid_input", "ragged"),
        (b'{"inputs": {"x": [[1, 2, 3]]}, "extra": 1}', 400, "invalid_input", "extra"),
        (b'{"inputs": {"z": [[1, 2, 3]]}}', 422, "unprocessable", "'x'"),
        (b'{"inputs": {"x": [[1, 2]]}}', 422, "unprocessable", "x"),
        (b'{"inputs": {"x": [["a", "b", "c"]]}}', 422, "unprocessable", "x"),
        (b'{"inputs": {"x": []}}', 422, "unprocessable", "x"),
    ],
)
async def test_bad_bodies_get_the_error_shape(
    served: tuple[httpx.AsyncClient, Any], body: bytes, status: int, code: str, needle: str
) -> None:
    client, _ = served
    answer = await client.post(
        "/v1/predict/lin:1", content=body, headers={"content-type": "application/json"}
    )

    assert answer.status_code == status, answer.text
    error = answer.json()
    assert set(error) == {"error", "code", "details"}
    assert error["code"] == code
    assert needle in error["error"]


async def test_unknown_models_and_bad_references(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = served
    missing = await client.post("/v1/predict/nope", json={"inputs": {"x": ROWS}})
    version = await client.post("/v1/predict/lin:7", json={"inputs": {"x": ROWS}})
    bad = await client.post("/v1/predict/lin:zero", json={"inputs": {"x": ROWS}})

    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (version.status_code, version.json()["code"]) == (404, "not_found")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_input")


async def test_continuous_traffic_through_an_alias_move_never_fails(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    client, registry = served
    await registry.set_alias(SetAlias(name="lin", alias="prod", version=1))
    versions: list[int] = []
    failures: list[str] = []
    moved = asyncio.Event()
    warmed = asyncio.Event()

    async def traffic() -> None:
        while not moved.is_set() or versions[-1] != 2:
            answer = await client.post("/v1/predict/lin@prod", json={"inputs": {"x": ROWS}})
            if answer.status_code != 200:
                failures.append(answer.text)
                return
            body = answer.json()
            versions.append(body["version"])
            if len(versions) >= 50:
                warmed.set()
            np.testing.assert_allclose(body["outputs"]["y"], expected(body["version"] - 1), 1e-5)

    workers = [asyncio.create_task(traffic()) for _ in range(8)]
    await asyncio.wait_for(warmed.wait(), timeout=30)
    await registry.set_alias(SetAlias(name="lin", alias="prod", version=2))
    moved.set()
    await asyncio.wait_for(asyncio.gather(*workers), timeout=30)

    assert failures == []
    assert set(versions) == {1, 2}
    first_new = versions.index(2)
    assert all(v == 2 for v in versions[first_new + 8 :])  # once switched, it stays switched


async def test_deployments_over_http(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = served
    spec = {
        "routes": [{"model": "lin:1", "weight": 1}, {"model": "lin:2", "weight": 1}],
        "sticky_header": "x-user",
        "cache_ttl_s": 60,
    }
    put = await client.put("/v1/inference/deployments/web", json=spec)
    got = await client.get("/v1/inference/deployments/web")
    listed = await client.get("/v1/inference/deployments", params={"limit": 10})

    assert put.status_code == 200, put.text
    assert got.json()["routes"] == spec["routes"]
    assert [d["name"] for d in listed.json()["items"]] == ["web"]
    assert listed.json()["next_cursor"] is None

    answers = [
        (
            await client.post(
                "/v1/predict/web", json={"inputs": {"x": ROWS}}, headers={"x-user": "alice"}
            )
        ).json()
        for _ in range(10)
    ]
    assert len({a["version"] for a in answers}) == 1
    assert {a["deployment"] for a in answers} == {"web"}
    assert answers[0].get("cached") is None
    assert all(a["cached"] is True for a in answers[1:])
    spread = set()
    for i in range(40):
        answer = await client.post(
            "/v1/predict/web", json={"inputs": {"x": ROWS}}, headers={"x-user": f"u{i}"}
        )
        spread.add(answer.json()["version"])
    assert spread == {1, 2}

    deleted = await client.delete("/v1/inference/deployments/web")
    missing = await client.get("/v1/inference/deployments/web")
    assert deleted.status_code == 200
    assert missing.status_code == 404


async def test_deployment_errors_and_default_answers_over_http(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    client, _ = served
    clash = await client.put(
        "/v1/inference/deployments/lin", json={"routes": [{"model": "lin:1", "weight": 1}]}
    )
    missing = await client.put(
        "/v1/inference/deployments/d1", json={"routes": [{"model": "lin:9", "weight": 1}]}
    )
    bad = await client.put("/v1/inference/deployments/d1", json={"routes": [], "extra": 1})
    default = await client.put(
        "/v1/inference/deployments/d2",
        json={
            "routes": [{"model": "lin:1", "weight": 1}],
            "fallbacks": [{"kind": "default", "outputs": {"y": [[0.0, 0.0]]}}],
        },
    )

    assert (clash.status_code, clash.json()["code"]) == (409, "conflict")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_input")
    assert default.status_code == 200, default.text
    assert default.json()["fallbacks"][0]["outputs"] == {"y": [[0.0, 0.0]]}
    answer = await client.post("/v1/predict/d2", json={"inputs": {"x": ROWS}})
    assert answer.json()["deployment"] == "d2"
    assert "fallback" not in answer.json()
