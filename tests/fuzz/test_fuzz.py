"""Schemathesis against a real `quarry serve`: no generated request may get a 5xx.

The server is seeded first (a model with an alias, a feature view with rows, a feature service,
a deployment) and ``schemathesis.toml`` beside this file points half the generated path names at
those, so fuzzed bodies and queries reach real objects. Every phase runs (examples, coverage,
fuzzing, stateful) for a bounded time; the check is ``not_a_server_error``. The README's testing
section gives the longer run with ``--checks all``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.bootstrap import AVAILABLE_MODULES
from tests.conftest import REDIS_URL
from tests.fakes.models import linear_onnx
from tests.fakes.server import Server

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SECONDS = int(os.environ.get("QUARRY_FUZZ_SECONDS", "30"))


def seed(url: str) -> None:
    """Create the objects the fuzzer's dictionaries name."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(2):
            answer = http.post(
                "/v1/registry/models/lin/versions", files={"file": ("m.onnx", linear_onnx())}
            )
            assert answer.status_code == 201, answer.text
        answer = http.put("/v1/registry/models/lin/aliases/champion", json={"version": 1})
        assert answer.status_code == 200, answer.text
        view = {"entities": ["user_id"], "features": [{"name": "age", "dtype": "float"}]}
        answer = http.put("/v1/features/views/users", json=view)
        assert answer.status_code in (200, 201), answer.text
        rows = [
            {"user_id": i, "event_timestamp": "2026-01-01T00:00:00Z", "age": 20.0 + i}
            for i in range(5)
        ]
        answer = http.post("/v1/features/views/users/rows", json={"rows": rows})
        assert answer.status_code < 300, answer.text
        answer = http.put("/v1/features/services/churn", json={"features": ["users:age"]})
        assert answer.status_code in (200, 201), answer.text
        routes = {"routes": [{"model": "lin:1", "weight": 0.5}, {"model": "lin:2", "weight": 0.5}]}
        answer = http.put("/v1/inference/deployments/live", json=routes)
        assert answer.status_code in (200, 201), answer.text


def fuzz(url: str, report_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/schema/openapi.json",
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-time",
        str(SECONDS),
        # One worker: Hypothesis compiles code while it generates, and CPython 3.11's ast module
        # raises a spurious "AST constructor recursion depth mismatch" when threads do that at
        # once (python/cpython#106905).
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "ndjson",
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]
    return subprocess.run(  # noqa: PLW1510 - the exit status is asserted with the output shown
        command, capture_output=True, text=True, timeout=SECONDS * 4 + 120, cwd=report_dir.parent
    )


@pytest.fixture(params=["embedded", "postgres-redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = {"QUARRY_LOG_LEVEL": "ERROR"}
    if request.param == "postgres-redis":
        url = request.getfixturevalue("postgres_schema_url")
        prefix = request.getfixturevalue("redis_namespace")
        env |= {
            f"QUARRY_{m.upper()}_DATABASE_URL": url
            for m in (spec.name for spec in AVAILABLE_MODULES)
        }
        env |= {
            "QUARRY_BROKER_URL": REDIS_URL,
            "QUARRY_EVENTS_URL": REDIS_URL,
            "QUARRY_ONLINE_STORE_URL": REDIS_URL,
            "QUARRY_REDIS_PREFIX": f"{prefix}:",
        }
    srv = Server(tmp_path / "data", env=env).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.timeout(SECONDS * 4 + 300)
def test_no_generated_request_gets_a_server_error(server: Server, tmp_path: Path) -> None:
    seed(server.url)

    run = fuzz(server.url, tmp_path / "reports")

    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert "passed" in run.stdout, tail
    assert server.process is not None
    assert server.process.poll() is None, "the server died"
    answer = httpx.get(f"{server.url}/healthz", timeout=10)
    assert answer.status_code == 200, answer.text
