"""Redis and PostgreSQL stopped hard mid-run, then started again: 503 ``unavailable`` while they
are gone, honest readiness, and recovery with no manual step.

The servers are private to the test (a ``redis-server`` and an ``initdb`` cluster on free ports,
see :mod:`tests.fakes.private_servers`): Redis is killed with ``SIGKILL`` and PostgreSQL with
``pg_ctl stop -m immediate``, each for a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import AVAILABLE_MODULES, Platform, create_app
from app.kernel.settings import Settings
from app.modules.features.settings import FeaturesSettings
from tests.fakes.models import linear_onnx
from tests.fakes.private_servers import PrivatePostgres, PrivateRedis
from tests.fakes.server import Server
from tests.fakes.subscriber import Listener, listener_module

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

MODULES = [spec.name for spec in AVAILABLE_MODULES]
ROWS = [[1.0, 2.0, 3.0]]
VIEW = {"entities": ["user_id"], "features": [{"name": "age", "dtype": "float"}]}
FAILING_CALLS = 10
"""Requests sent to each route that needs a missing server: their count must not show in logs."""


class Stack:
    """The private servers, the platform running on them and an HTTP client to it."""

    def __init__(
        self, redis: PrivateRedis, pg: PrivatePostgres, http: httpx.AsyncClient, listener: Listener
    ) -> None:
        self.redis, self.pg, self.http, self.listener = redis, pg, http, listener


class Servers:
    """A private Redis and PostgreSQL (one database per module)."""

    def __init__(self, redis: PrivateRedis, pg: PrivatePostgres, urls: dict[str, str]) -> None:
        self.redis, self.pg, self.urls = redis, pg, urls

    def settings(self, data_dir: Path, **changes: Any) -> Settings:
        return Settings(
            data_dir=data_dir,
            database_urls=self.urls,
            events_url=self.redis.url,
            events_poll_s=0.2,
            rate_limit_url="memory://",  # a Redis limiter's client closes with the app lifespan
            auth="off",
            log_format="console",
            log_level="WARNING",
            **changes,
        ).with_module(FeaturesSettings(online_store_url=self.redis.url))


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    redis = await asyncio.to_thread(PrivateRedis(tmp_path / "redis").start)
    pg = PrivatePostgres()
    try:
        await asyncio.to_thread(pg.start)
        urls = {m: await asyncio.to_thread(pg.create_database, m) for m in MODULES}
        yield Servers(redis, pg, urls)
    finally:
        redis.kill()
        await asyncio.to_thread(pg.destroy)


@asynccontextmanager
async def serving(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        yield http


@pytest.fixture
async def stack(servers: Servers, tmp_path: Path) -> AsyncIterator[Stack]:
    listener = Listener()
    settings = servers.settings(tmp_path / "data")
    platform = Platform(settings, extra_modules=[listener_module(listener)])
    async with platform, serving(platform) as http:
        yield Stack(servers.redis, servers.pg, http, listener)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 30) -> None:
    """Poll ``check`` (state seen over HTTP: nothing to wait on) until it holds; fail naming
    ``what`` after ``within_s`` seconds."""
    try:
        async with asyncio.timeout(within_s):
            while not await check():  # noqa: ASYNC110 - polling another system's state
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"{what} did not happen within {within_s} s")


async def ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


def assert_unavailable(answer: httpx.Response, dependency: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    body = answer.json()
    assert body["code"] == "unavailable", body
    assert body["details"]["dependency"] == dependency
    assert "127.0.0.1" not in body["error"]
    assert "postgres@" not in body["error"]


async def predict(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/v1/predict/p:1", json={"inputs": {"x": ROWS}})


async def online(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post(
        "/v1/features/online", json={"features": ["users:age"], "entities": {"user_id": [1]}}
    )


def dependency_up(metrics: str, name: str) -> float:
    prefix = f'quarry_dependency_up{{dependency="{name}"}} '
    line = next(line for line in metrics.splitlines() if line.startswith(prefix))
    return float(line.removeprefix(prefix))


async def seed(stack: Stack) -> None:
    http = stack.http
    for seed_ in (0, 1):
        answer = await upload(http, seed=seed_)
        assert answer.status_code == 201, answer.text
    assert (await http.put("/v1/features/views/users", json=VIEW)).status_code == 200
    now = datetime.now(UTC).isoformat()
    rows = {"rows": [{"user_id": 1, "age": 30.0, "event_timestamp": now}]}
    assert (await http.post("/v1/features/views/users/rows", json=rows)).status_code == 200
    assert (await predict(http)).status_code == 200  # p:1 is loaded from here on
    assert (await online(http)).status_code == 200


async def test_redis_then_postgresql_go_away_and_come_back(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    http = stack.http
    await seed(stack)
    await eventually(lambda: ready(http), "readiness before the outages")
    caplog.set_level(logging.INFO)
    caplog.clear()

    # --- Redis killed -----------------------------------------------------------------------
    await asyncio.to_thread(stack.redis.kill)
    for _ in range(FAILING_CALLS):
        assert_unavailable(await online(http), "redis")
    readiness = await http.get("/readyz")
    assert readiness.status_code == 503
    assert readiness.json()["unavailable"] == ["online_store"]
    assert (await http.get("/healthz")).status_code == 200
    assert (await predict(http)).status_code == 200  # a loaded model serves by tensor
    moved = await http.put("/v1/registry/models/p/aliases/champion", json={"version": 2})
    assert moved.status_code == 200, moved.text  # stored, with its event, in the outbox
    assert (await upload(http, seed=2)).status_code == 201  # version 3, its event in the outbox
    modules = (await http.get("/v1/modules")).json()
    states = {d["name"]: d["up"] for d in modules["dependencies"]}
    assert states["online_store"] is False
    assert states["registry.database"] is True
    await eventually(lambda: metric_is(http, "events", 0.0), "events down on /metrics")

    await asyncio.to_thread(stack.redis.start)
    await eventually(lambda: ready(http), "readiness after Redis came back")
    assert (await online(http)).status_code == 200
    await eventually(lambda: listened(stack.listener, 3), "the event stored during the outage")
    champion = await http.post("/v1/predict/p@champion", json={"inputs": {"x": ROWS}})
    assert champion.json()["version"] == 2

    # --- PostgreSQL stopped -----------------------------------------------------------------
    await asyncio.to_thread(stack.pg.stop_immediately)
    for _ in range(FAILING_CALLS):
        assert_unavailable(await http.get("/v1/registry/models/p"), "postgresql")
    assert_unavailable(await http.put("/v1/features/views/other", json=VIEW), "postgresql")
    assert_unavailable(await http.get("/v1/training/jobs"), "postgresql")
    failed = (await http.get("/v1/registry/models/p")).json()
    assert failed["details"]["module"] == "registry"
    readiness = await http.get("/readyz")
    assert readiness.status_code == 503
    assert "registry.database" in readiness.json()["unavailable"]
    assert (await http.get("/healthz")).status_code == 200
    assert (await predict(http)).status_code == 200

    await asyncio.to_thread(stack.pg.start)
    await eventually(lambda: ready(http), "readiness after PostgreSQL came back")
    assert (await http.get("/v1/registry/models/p")).status_code == 200
    assert (await http.put("/v1/features/views/other", json=VIEW)).status_code == 200
    assert (await http.get("/v1/training/jobs")).status_code == 200
    assert (await upload(http, seed=3)).status_code == 201
    await eventually(lambda: listened(stack.listener, 4), "an event published after both")
    await eventually(lambda: metric_is(http, "events", 1.0), "events up on /metrics")

    calls = stack.listener.calls
    assert len(calls) == len(set(calls)), "an event was delivered twice"
    assert sorted(e.version for e in stack.listener.seen) == [1, 2, 3, 4]
    assert_few_log_lines(caplog.records)


async def test_a_remote_module_passes_its_outage_on_as_unavailable(
    servers: Servers, tmp_path: Path
) -> None:
    token = "outage-test-service-token-0123456789"
    env = {
        "QUARRY_MODULES": "registry",
        "QUARRY_REGISTRY_DATABASE_URL": servers.urls["registry"],
        "QUARRY_EVENTS_URL": servers.redis.url,
        "QUARRY_RATE_LIMIT_URL": "memory://",
        "QUARRY_SERVICE_TOKEN": token,
        "QUARRY_AUTH": "off",
    }
    remote = await asyncio.to_thread(Server(tmp_path / "registry", env=env).start)
    settings = servers.settings(
        tmp_path / "main", remotes={"registry": remote.url}, service_token=token
    )
    try:
        async with Platform(settings) as platform, serving(platform) as http:
            assert (await upload(http, seed=0)).status_code == 201

            await asyncio.to_thread(servers.pg.stop_immediately)
            answer = await http.get("/v1/registry/models/p")  # answered by the remote process
            assert_unavailable(answer, "postgresql")
            assert answer.json()["details"]["module"] == "registry"
            async with httpx.AsyncClient(base_url=remote.url) as direct:
                readiness = await direct.get("/readyz")
                assert readiness.status_code == 503
                assert readiness.json()["unavailable"] == ["registry.database"]
                assert (await direct.get("/healthz")).status_code == 200

                await asyncio.to_thread(servers.pg.start)
                await eventually(lambda: ready(direct), "the remote's readiness after PostgreSQL")
            await eventually(lambda: model_found(http), "the registry through the remote")
    finally:
        await asyncio.to_thread(remote.stop)


async def model_found(http: httpx.AsyncClient) -> bool:
    return (await http.get("/v1/registry/models/p")).status_code == 200


def assert_few_log_lines(records: list[logging.LogRecord]) -> None:
    """The outages are told in a bounded number of lines: none per failed call or retry."""
    noisy = [r for r in records if r.levelno >= logging.WARNING]
    messages = Counter(r.getMessage() for r in noisy)
    assert not [m for m in messages if "unexpected" in m or "unhandled" in m], messages
    assert len(noisy) < 80, messages
    assert max(messages.values()) <= 2, messages


async def upload(http: httpx.AsyncClient, *, seed: int) -> httpx.Response:
    files = {"file": ("m.onnx", linear_onnx(seed=seed), "application/octet-stream")}
    return await http.post("/v1/registry/models/p/versions", files=files)


async def listened(listener: Listener, version: int) -> bool:
    return any(event.version == version for event in listener.seen)


async def metric_is(http: httpx.AsyncClient, dependency: str, value: float) -> bool:
    return dependency_up((await http.get("/metrics")).text, dependency) == value
