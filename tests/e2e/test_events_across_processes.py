"""Registry events reach inference in another process over Redis Streams, even across a kill."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.fakes.models import linear_onnx
from tests.fakes.server import Server

pytestmark = pytest.mark.slow


def inbox(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "inference.db") as conn:
        rows = conn.execute("SELECT type, status FROM inference_event_inbox ORDER BY type, status")
        return [(str(t), str(s)) for t, s in rows]


async def eventually(check: object, want: object, within: float = 30) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = check()  # type: ignore[operator]
        if got == want or loop.time() > deadline:
            return got
        await asyncio.sleep(0.1)


@pytest.fixture
def processes(tmp_path: Path, redis_env: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    registry = Server(tmp_path / "registry", env={**redis_env, "QUARRY_MODULES": "registry"})
    registry.start()
    inference = Server(
        tmp_path / "inference",
        env={**redis_env, "QUARRY_MODULES": "inference", "QUARRY_REMOTE_REGISTRY": registry.url},
    )
    inference.start()
    yield registry, inference
    inference.stop()
    registry.stop()


async def test_events_cross_processes_and_survive_a_killed_consumer(
    processes: tuple[Server, Server], redis_env: dict[str, str]
) -> None:
    registry, inference = processes
    async with httpx.AsyncClient(base_url=registry.url) as reg:
        for seed in (0, 1):
            created = await reg.post(
                "/v1/registry/models/lin/versions",
                files={"file": ("m.onnx", linear_onnx(seed=seed), "application/octet-stream")},
            )
            assert created.status_code == 201, created.text
        assert (
            await reg.put("/v1/registry/models/lin/aliases/prod", json={"version": 1})
        ).is_success
        delivered = [("ModelAliasChanged", "completed")] + [
            ("ModelVersionRegistered", "completed")
        ] * 2
        assert await eventually(lambda: inbox(inference.data_dir), delivered) == delivered

        inference.kill()  # events published now wait in the stream for the consumer group
        assert (
            await reg.put("/v1/registry/models/lin/aliases/prod", json={"version": 2})
        ).is_success
        # the outbox relay publishes after the change commits, not within the request
        stream = f"{redis_env['QUARRY_REDIS_PREFIX']}events:registry"
        streams = redis.Redis.from_url(REDIS_URL)
        assert await eventually(lambda: streams.xlen(stream), 4) == 4
        streams.close()

    inference.start()
    after = [("ModelAliasChanged", "completed")] * 2 + [("ModelVersionRegistered", "completed")] * 2
    assert await eventually(lambda: inbox(inference.data_dir), after) == after
    async with httpx.AsyncClient(base_url=inference.url) as inf:
        answer = await inf.post("/v1/predict/lin@prod", json={"inputs": {"x": [[1.0, 2.0, 3.0]]}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2
