"""End-to-end fixtures: a real `quarry serve` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REDIS_URL
from tests.fakes.server import Server

if TYPE_CHECKING:
    from tests.e2e._processes import Receiver

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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP trace receiver that the processes a test starts export their spans to."""
    from tests.e2e._processes import Receiver

    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()
