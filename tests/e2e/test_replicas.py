"""Two public API replicas behind the same PostgreSQL schema and Redis.

Each singleton loop (monitoring's drift schedule and retention, training's watchdog) is led by
exactly one replica, the survivor takes over the loops of a replica that was killed, and the
rate limit of an API key is one budget for both replicas.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.server import QUARRY, Server

pytestmark = pytest.mark.slow

LOOPS = ("monitoring.drift_schedule", "monitoring.retention", "training.watchdog")
BURST = 5
_GAUGE = re.compile(r'^quarry_singleton_leader\{loop="([^"]+)"\} (\S+)$', re.MULTILINE)


@pytest.fixture
def env(redis_env: dict[str, str], postgres_schema_url: str, tmp_path: Path) -> dict[str, str]:
    databases = {
        f"QUARRY_{m.upper()}_DATABASE_URL": postgres_schema_url
        for m in ("registry", "features", "inference", "training", "monitoring")
    }
    return {
        **redis_env,
        **databases,
        "QUARRY_API_KEYS_FILE": str(tmp_path / "api_keys.toml"),
        "QUARRY_AUTH": "on",
        "QUARRY_METRICS_AUTH": "off",  # the test reads leaders from /metrics without a key
        "QUARRY_RATE_LIMIT_PER_S": "0.01",
        "QUARRY_RATE_LIMIT_BURST": str(BURST),
        "QUARRY_MONITORING_DRIFT_INTERVAL_S": "0.5",
        "QUARRY_MONITORING_RETENTION_S": "10",
        "QUARRY_TRAINING_HEARTBEAT_S": "0.2",
        "QUARRY_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def replicas(tmp_path: Path, env: dict[str, str]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for name in ("a", "b"):  # one after the other: the first one migrates the schema
            started.append(Server(tmp_path / f"replica-{name}", env=env).start())
        yield started
    finally:
        for server in started:
            server.stop()


def leaders(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return {loop: float(value) for loop, value in _GAUGE.findall(text)}


def wait_for(condition: object, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)  # polling a condition with a deadline, not standing in for one


def test_each_singleton_loop_runs_in_one_replica_and_moves_when_it_dies(
    replicas: list[Server],
) -> None:
    def each_loop_led_once() -> bool:
        seen = [leaders(server) for server in replicas]
        return all(sum(s.get(loop, 0.0) for s in seen) == 1 for loop in LOOPS) and all(
            set(LOOPS) <= set(s) for s in seen
        )

    wait_for(each_loop_led_once)
    time.sleep(2)  # several lease checks later it still holds: nobody takes a held lease
    assert each_loop_led_once()

    leader = next(s for s in replicas if leaders(s).get("monitoring.drift_schedule") == 1)
    survivor = next(s for s in replicas if s is not leader)
    leader.kill()

    wait_for(lambda: all(leaders(survivor).get(loop) == 1 for loop in LOOPS))
    assert "leading monitoring.drift_schedule" in survivor.log.read_text()


def test_replicas_share_one_rate_limit_budget_per_key(
    replicas: list[Server], env: dict[str, str]
) -> None:
    created = subprocess.run(
        [str(QUARRY), "keys", "create", "--scopes", "read", "--name", "shared"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}

    statuses = [
        httpx.get(f"{replicas[i % 2].url}/v1/modules", headers=headers, timeout=5).status_code
        for i in range(3 * BURST)
    ]

    # each replica alone would let BURST through: together they let BURST through in all
    assert statuses == [200] * BURST + [429] * (2 * BURST)
