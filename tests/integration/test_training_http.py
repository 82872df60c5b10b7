"""The training routes on the real app: submit, follow, list, cancel, trainers, bad input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings

pytest.importorskip("torch")

ROWS = [{"a": float(i), "b": float(i % 4), "y": 3.0 * i - 1.0} for i in range(40)]
SPEC = {
    "trainer": "mlp_regressor",
    "model": "lin",
    "dataset": {"rows": ROWS, "features": ["a", "b"], "label": "y"},
    "hyperparameters": {"epochs": 5},
}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with Platform(Settings(data_dir=tmp_path)) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield http


async def outcome(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = (await client.get(f"/v1/training/jobs/{job_id}")).json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_submit_follow_and_list(client: httpx.AsyncClient) -> None:
    submitted = await client.post("/v1/training/jobs", json=SPEC)
    assert submitted.status_code == 202, submitted.text
    job = await outcome(client, submitted.json()["id"])

    assert job["status"] == "succeeded", job
    assert job["version"] == 1
    assert {"rmse", "mae", "r2"} <= set(job["metrics"])
    listed = (await client.get("/v1/training/jobs", params={"status": "succeeded"})).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    version = await client.get("/v1/registry/models/lin/versions/1")
    assert version.json()["lineage"]["training_job_id"] == job["id"]


async def test_trainers_are_listed_with_their_hyperparameters(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/training/trainers")
    assert answer.status_code == 200
    trainers = {t["name"]: t for t in answer.json()["items"]}
    assert trainers["mlp_classifier"]["task"] == "classification"
    assert trainers["mlp_regressor"]["hyperparameters"]["epochs"].startswith("int")


async def test_cancelling_a_finished_job_leaves_it_as_it_is(client: httpx.AsyncClient) -> None:
    job_id = (await client.post("/v1/training/jobs", json=SPEC)).json()["id"]
    await outcome(client, job_id)
    answer = await client.post(f"/v1/training/jobs/{job_id}/cancel")
    assert answer.status_code == 200
    assert answer.json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{", 400, "malformed"),
        (b"", 400, "empty body"),
        ({"trainer": "mlp_regressor"}, 400, "model"),
        ({**SPEC, "trainer": "xgboost"}, 400, "xgboost"),
        ({**SPEC, "hyperparameters": {"lr": "fast"}}, 400, "lr"),
        ({**SPEC, "hyperparameters": {"epochs": 0}}, 400, "at least 1"),
        ({**SPEC, "hyperparameters": {"dropout": 1.5}}, 400, "dropout"),
        ({**SPEC, "split": {"validation": 1.5}}, 400, "validation"),
        ({**SPEC, "gate": {"metric": "accuracy"}}, 400, "accuracy"),
    ],
)
async def test_bad_specs_get_clear_errors(
    client: httpx.AsyncClient, body: Any, status: int, message: str
) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    answer = await client.post("/v1/training/jobs", **kwargs)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


async def test_unknown_jobs_are_404(client: httpx.AsyncClient) -> None:
    for answer in (
        await client.get("/v1/training/jobs/nope"),
        await client.post("/v1/training/jobs/nope/cancel"),
    ):
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"


async def test_a_body_nested_too_deeply_is_a_400(client: httpx.AsyncClient) -> None:
    deep = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for path in ("/v1/training/jobs", "/v1/training/policies/m"):
        method = "POST" if path.endswith("jobs") else "PUT"
        answer = await client.request(method, path, content=deep)
        assert answer.status_code == 400, answer.text
        assert "nested too deeply" in answer.json()["error"]
