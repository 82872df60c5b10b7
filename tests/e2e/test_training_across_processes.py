"""Training on a separate `quarry worker` process over a Redis broker and PostgreSQL.

The public process hosts registry, features, inference and training (the API and the job
table); the worker hosts training only and reaches the rest over HTTP RPC, as it would on a GPU
host. A worker killed mid-job leads to one re-run on another worker and one version.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.fakes.server import QUARRY, Server

pytestmark = pytest.mark.slow
pytest.importorskip("torch")

USERS = 200


@pytest.fixture
def env(redis_env: dict[str, str], postgres_schema_url: str) -> dict[str, str]:
    databases = {
        f"QUARRY_{m.upper()}_DATABASE_URL": postgres_schema_url
        for m in ("registry", "features", "inference", "training", "monitoring")
    }
    return {
        **redis_env,
        **databases,
        "QUARRY_TRAINING_HEARTBEAT_S": "0.3",
        "QUARRY_TRAINING_STALE_S": "2",
    }


@pytest.fixture
def api(tmp_path: Path, env: dict[str, str]) -> Iterator[Server]:
    server = Server(
        tmp_path / "api",
        env={**env, "QUARRY_MODULES": "registry,features,inference,training"},
    ).start()
    try:
        yield server
    finally:
        server.stop()


class Worker:
    """A `quarry worker` process running training jobs only."""

    def __init__(self, tmp_path: Path, env: dict[str, str], api: Server, name: str) -> None:
        self.log = tmp_path / f"worker-{name}.log"
        worker_env = {
            **os.environ,
            **env,
            "QUARRY_LOG_LEVEL": "INFO",
            "QUARRY_MODULES": "training",
            "QUARRY_REMOTE_REGISTRY": api.url,
            "QUARRY_REMOTE_FEATURES": api.url,
            "QUARRY_REMOTE_INFERENCE": api.url,
        }
        data = tmp_path / f"worker-{name}"
        data.mkdir()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(QUARRY), "--data-dir", str(data), "worker", "--queues", "training"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=worker_env,
                cwd=tmp_path,
            )

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def seed(client: httpx.Client) -> list[dict[str, Any]]:
    view = {
        "entities": ["user_id"],
        "features": [
            {"name": "x1", "dtype": "float"},
            {"name": "x2", "dtype": "float"},
            {"name": "churned", "dtype": "int"},
        ],
    }
    assert client.put("/v1/features/views/users", json=view).status_code == 200
    rng = np.random.default_rng(3)
    x = rng.normal(size=(USERS, 2))
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    rows = [
        {
            "user_id": i,
            "event_timestamp": when,
            "x1": float(x[i, 0]),
            "x2": float(x[i, 1]),
            "churned": int(x[i, 0] + x[i, 1] > 0),
        }
        for i in range(USERS)
    ]
    assert client.post("/v1/features/views/users/rows", json={"rows": rows}).status_code == 200
    service = {
        "features": ["users:x1", "users:x2"],
        "transforms": [{"type": "standardize", "input": "users:x1"}],
    }
    assert client.put("/v1/features/services/churn", json=service).status_code == 200
    now = datetime.now(UTC).isoformat()
    return [{"user_id": i, "event_timestamp": now} for i in range(USERS)]


def spec(entity_rows: list[dict[str, Any]], **hyperparameters: Any) -> dict[str, Any]:
    return {
        "trainer": "mlp_classifier",
        "model": "churn",
        "dataset": {
            "feature_service": "churn",
            "entity_rows": entity_rows,
            "label": "users:churned",
        },
        "hyperparameters": {"epochs": 20, "hidden": 16, **hyperparameters},
        "gate": {"metric": "accuracy", "threshold": 0.7, "promote_to": "candidate"},
    }


def wait(client: httpx.Client, job_id: str, until: Any, within: float = 120) -> dict[str, Any]:
    """Poll the job until ``until(job)`` holds (or fail after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        job = client.get(f"/v1/training/jobs/{job_id}").json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job state after {within} s: {job}"
        time.sleep(0.1)  # polling another process's progress, with a deadline


def test_a_worker_process_trains_and_the_api_serves_by_entity(
    api: Server, env: dict[str, str], tmp_path: Path
) -> None:
    worker = Worker(tmp_path, env, api, "a")
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            entity_rows = seed(client)
            submitted = client.post("/v1/training/jobs", json=spec(entity_rows))
            assert submitted.status_code == 202, submitted.text

            job = wait(
                client, submitted.json()["id"], lambda j: j["status"] not in ("queued", "running")
            )

            assert job["status"] == "succeeded", (job, worker.log.read_text()[-3000:])
            assert job["verdict"]["passed"]
            answer = client.post(
                "/v1/predict/churn@candidate", json={"entities": {"user_id": [1, 2]}}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == job["version"]
            assert len(answer.json()["outputs"]["probabilities"]) == 2
    finally:
        worker.stop()


def test_a_worker_killed_mid_job_leads_to_one_rerun_and_one_version(
    api: Server, env: dict[str, str], tmp_path: Path
) -> None:
    first = Worker(tmp_path, env, api, "first")
    second = None
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            entity_rows = seed(client)
            slow = spec(entity_rows, epochs=300, patience=300, batch_size=8)
            job_id = client.post("/v1/training/jobs", json=slow).json()["id"]
            wait(client, job_id, lambda j: j["status"] == "running" and j["epoch"] >= 1)

            first.kill()
            second = Worker(tmp_path, env, api, "second")
            job = wait(client, job_id, lambda j: j["status"] not in ("queued", "running"), 240)

            assert job["status"] == "succeeded", job
            assert job["attempt"] == 2
            versions = client.get("/v1/registry/models/churn/versions").json()["items"]
            assert [v["version"] for v in versions] == [job["version"]]
    finally:
        first.stop()
        if second is not None:
            second.stop()
