"""The whole platform across real processes, on Redis and PostgreSQL, separate data directories.

- **api**: `quarry serve` hosting registry, features, monitoring and training (the job table);
- **inference**: `quarry serve` hosting inference alone, reaching the rest over HTTP RPC;
- **worker**: `quarry worker --queues training` hosting training, reaching the rest over RPC.

Ingest, train, register, serve by entity, see the prediction in monitoring, and one trace
across the processes (every process exports spans over OTLP to a receiver run by the test).
Then the inference process is killed: predictions fail fast with 503, the breaker opens, and
after a restart service resumes with nothing lost.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e._processes import Receiver, eventually, seed
from tests.fakes.server import QUARRY, Server, free_port

pytestmark = pytest.mark.slow
pytest.importorskip("torch")

USERS = 120


@pytest.fixture
def env(redis_env: dict[str, str], postgres_schema_url: str, receiver: Receiver) -> dict[str, str]:
    databases = {
        f"QUARRY_{m.upper()}_DATABASE_URL": postgres_schema_url
        for m in ("registry", "features", "inference", "training", "monitoring")
    }
    return {
        **redis_env,
        **databases,
        "QUARRY_TRAINING_HEARTBEAT_S": "0.3",
        "QUARRY_TRAINING_STALE_S": "3",
        "QUARRY_PREDICTION_LOG_SAMPLE": "1",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def test_the_platform_across_processes_survives_losing_inference(
    tmp_path: Path, env: dict[str, str], receiver: Receiver
) -> None:
    inference_port = free_port()
    api = Server(
        tmp_path / "api",
        env={
            **env,
            "OTEL_SERVICE_NAME": "quarry-api",
            "QUARRY_MODULES": "registry,features,monitoring,training",
            "QUARRY_REMOTE_INFERENCE": f"http://127.0.0.1:{inference_port}",
        },
    ).start()
    inference_env = {
        **env,
        "OTEL_SERVICE_NAME": "quarry-inference",
        "QUARRY_MODULES": "inference",
        "QUARRY_REMOTE_REGISTRY": api.url,
        "QUARRY_REMOTE_FEATURES": api.url,
        "QUARRY_REMOTE_MONITORING": api.url,
    }
    inference = Server(tmp_path / "inference", port=inference_port, env=inference_env).start()
    (tmp_path / "worker").mkdir()
    worker_log = (tmp_path / "worker.log").open("ab")
    worker = subprocess.Popen(
        [str(QUARRY), "--data-dir", str(tmp_path / "worker"), "worker", "--queues", "training"],
        env={
            **os.environ,
            **env,
            "OTEL_SERVICE_NAME": "quarry-worker",
            "QUARRY_MODULES": "training",
            "QUARRY_REMOTE_REGISTRY": api.url,
            "QUARRY_REMOTE_FEATURES": api.url,
            "QUARRY_REMOTE_INFERENCE": inference.url,
        },
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    restarted = None
    try:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            entity_rows = seed(client, "users", "user_id", USERS)
            spec = {
                "trainer": "logistic_regression",
                "model": "churn",
                "dataset": {
                    "feature_service": "churn",
                    "entity_rows": entity_rows,
                    "label": "users:churned",
                },
                "hyperparameters": {"epochs": 30},
                "gate": {"metric": "accuracy", "threshold": 0.6, "promote_to": "champion"},
            }
            job_id = client.post("/v1/training/jobs", json=spec).json()["id"]
            job = eventually(
                lambda: (
                    (j := client.get(f"/v1/training/jobs/{job_id}").json())["status"]
                    not in ("queued", "running")
                    and j
                ),
                "the training job",
            )
            assert job["status"] == "succeeded", job

            trace_id = secrets.token_hex(16)
            answer = client.post(
                "/v1/predict/churn",
                json={"entities": {"user_id": [1, 2, 3]}},
                headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == job["version"]

            eventually(
                lambda: (
                    client.get("/v1/monitoring/models/churn/summary", params={"window": "10m"})
                    .json()
                    .get("requests")
                ),
                "the prediction to reach monitoring",
            )
            eventually(
                lambda: receiver.services_in(trace_id) >= {"quarry-api", "quarry-inference"},
                "spans of both processes in the request's trace",
                within=30,
            )

            inference.kill()
            started = time.monotonic()
            failed = [
                client.post("/v1/predict/churn", json={"entities": {"user_id": [1]}})
                for _ in range(6)
            ]
            elapsed = time.monotonic() - started
            assert {f.status_code for f in failed} == {503}
            assert all(f.json()["code"] == "unavailable" for f in failed)
            assert elapsed < 20  # each fails within its deadline, the later ones at once
            modules = {m["name"]: m for m in client.get("/v1/modules").json()["modules"]}
            assert modules["inference"]["breaker"] == "open"

            restarted = Server(
                tmp_path / "inference", port=inference_port, env=inference_env
            ).start()
            resumed = eventually(
                lambda: (
                    (
                        r := client.post("/v1/predict/churn", json={"entities": {"user_id": [1]}})
                    ).status_code
                    == 200
                    and r
                ),
                "predictions after the restart",
                within=60,
            )
            assert resumed.json()["version"] == job["version"]
            versions = client.get("/v1/registry/models/churn/versions").json()["items"]
            assert [v["version"] for v in versions] == [job["version"]]
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        worker_log.close()
        for server in (restarted, inference, api):
            if server is not None:
                server.stop()
