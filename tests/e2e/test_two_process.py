"""The registry in its own process: the public API and app.connect(url=...) reach it through RPC."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import httpx
import pytest
import redis

import app
from contracts.common import Unavailable
from contracts.registry import FetchArtifact, GetVersion, read_artifact
from tests.conftest import REDIS_URL
from tests.e2e.conftest import TOKEN
from tests.fakes.models import relu_model_bytes
from tests.fakes.server import Server

pytestmark = pytest.mark.slow


async def modules(http: httpx.AsyncClient) -> dict[str, dict[str, object]]:
    rows = (await http.get("/v1/modules")).json()["modules"]
    return {row["name"]: row for row in rows}


async def test_a_remote_registry_serves_fails_fast_and_recovers(
    tmp_path: Path, redis_env: dict[str, str]
) -> None:
    registry = Server(tmp_path / "registry", env={**redis_env, "QUARRY_MODULES": "registry"})
    registry.start()
    public = Server(
        tmp_path / "public", env={**redis_env, "QUARRY_REMOTE_REGISTRY": registry.url}
    ).start()
    data = relu_model_bytes()
    http = httpx.AsyncClient(base_url=public.url)
    try:
        created = await http.post(
            "/v1/registry/models/churn/versions",
            files={"file": ("m.onnx", data, "application/octet-stream")},
        )
        assert created.status_code == 201, created.text
        assert (await http.get("/v1/registry/models/churn/versions/1/artifact")).content == data
        row = (await modules(http))["registry"]
        assert (row["placement"], row["url"], row["breaker"]) == ("remote", registry.url, "closed")
        assert not (tmp_path / "public" / "artifacts").exists()  # the bytes live with the registry
        stream = f"{redis_env['QUARRY_REDIS_PREFIX']}events:registry"
        published = redis.Redis.from_url(REDIS_URL).xrange(stream)
        assert [entry[b"type"] for _, entry in published] == [b"ModelVersionRegistered"]

        async with app.connect(url=public.url, api_key=TOKEN) as q:
            version = await q.registry.get_version(GetVersion(ref="churn"))
            _, fetched = await read_artifact(q.registry.fetch_artifact(FetchArtifact(ref="churn")))
        assert version.sha256 == hashlib.sha256(data).hexdigest()
        assert fetched == data

        registry.kill()
        statuses = set()
        for _ in range(6):
            answer = await http.get(
                "/v1/registry/models/churn", headers={"quarry-deadline-ms": "3000"}
            )
            statuses.add((answer.status_code, answer.json()["code"]))
            assert "retry-after" in answer.headers
        assert statuses == {(503, "unavailable")}
        assert (await modules(http))["registry"]["breaker"] == "open"
        async with app.connect(url=public.url, api_key=TOKEN) as q:
            with pytest.raises(Unavailable):
                await q.registry.get_version(GetVersion(ref="churn"))

        registry.start()
        deadline = time.monotonic() + 30
        while True:  # the breaker lets a probe through after its reset time
            answer = await http.get("/v1/registry/models/churn/versions/1")
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert answer.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert (await modules(http))["registry"]["breaker"] == "closed"
    finally:
        await http.aclose()
        public.stop()
        registry.stop()
