"""End-to-end fixtures: a real `quarry serve` process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL, require_service
from tests.fakes.server import Server

TOKEN = "e2e-service-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    """Events and tasks on the real Redis, under a key prefix of this test's own."""
    require_service("Redis", "127.0.0.1", 6379)
    prefix = f"quarry-test-{uuid.uuid4().hex[:8]}:"
    yield {
        "QUARRY_EVENTS_URL": REDIS_URL,
        "QUARRY_BROKER_URL": REDIS_URL,
        "QUARRY_REDIS_PREFIX": prefix,
        "QUARRY_SERVICE_TOKEN": TOKEN,
    }
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*")) + list(client.scan_iter(f"{prefix.rstrip(':')}*"))
    if keys:
        client.delete(*keys)
    client.close()
