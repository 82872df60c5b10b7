"""End-to-end fixtures: a real `quarry serve` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
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
def redis_env(redis_namespace: str) -> dict[str, str]:
    """Events and tasks on the real Redis, under a key prefix of this test's own."""
    return {
        "QUARRY_EVENTS_URL": REDIS_URL,
        "QUARRY_BROKER_URL": REDIS_URL,
        "QUARRY_REDIS_PREFIX": f"{redis_namespace}:",
        "QUARRY_SERVICE_TOKEN": TOKEN,
    }
