"""Batch jobs: the HTTP routes, resuming from ``rows_done``, and requeueing at start-up."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from contracts.common import Tensor, Unavailable
from contracts.inference import (
    FetchBatchResults,
    GetBatchJob,
    SubmitBatchJob,
)
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx, linear_weights
from tests.integration._batch import failing_on_call, finished, run_by_hand

ROWS = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)


def expected(x: np.ndarray) -> np.ndarray:
    weight, bias = linear_weights(seed=0)
    return x @ weight + bias


async def _start(tmp_path: Path) -> Platform:
    platform = Platform(Settings(data_dir=tmp_path, events_poll_s=0.05))
    await platform.start()
    return platform


async def test_the_http_routes_submit_poll_and_fetch(tmp_path: Path) -> None:
    platform = await _start(tmp_path)
    try:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
            body = {"model": "lin", "inputs": {"x": ROWS.tolist()}, "chunk_rows": 4}
            submitted = await client.post("/v1/inference/batch-jobs", json=body)
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            assert submitted.json()["status"] == "queued"

            await finished(platform.client("inference", caller="tests"), job_id)
            job = await client.get(f"/v1/inference/batch-jobs/{job_id}")
            results = await client.get(f"/v1/inference/batch-jobs/{job_id}/results")
            missing = await client.get("/v1/inference/batch-jobs/nope")
            unknown = await client.post(
                "/v1/inference/batch-jobs", json={"model": "nope", "inputs": {"x": [[1, 2, 3]]}}
            )

        assert job.status_code == 200
        assert (job.json()["status"], job.json()["rows_done"], job.json()["version"]) == (
            "succeeded",
            10,
            1,
        )
        assert results.status_code == 200, results.text
        np.testing.assert_allclose(results.json()["outputs"]["y"], expected(ROWS), rtol=1e-5)
        assert (missing.status_code, unknown.status_code) == (404, 404)
    finally:
        await platform.stop()


async def test_results_are_409_until_the_job_succeeds(tmp_path: Path) -> None:
    platform = await _start(tmp_path)
    try:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        run_by_hand(platform)  # the job stays queued
        inference = platform.client("inference", caller="tests")
        job = await inference.submit_batch_job(
            SubmitBatchJob(model="lin:1", inputs={"x": Tensor.from_numpy(ROWS)})
        )
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as client:
            answer = await client.get(f"/v1/inference/batch-jobs/{job.id}/results")
        assert answer.status_code == 409
    finally:
        await platform.stop()


async def test_a_retried_job_resumes_from_rows_done(tmp_path: Path) -> None:
    platform = await _start(tmp_path)
    try:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        jobs = run_by_hand(platform)
        calls = failing_on_call(jobs, 3)
        inference = platform.client("inference", caller="tests")
        job = await inference.submit_batch_job(
            SubmitBatchJob(model="lin:1", inputs={"x": Tensor.from_numpy(ROWS)}, chunk_rows=3)
        )

        with pytest.raises(Unavailable):
            await jobs.run(job.id)
        halfway = await inference.get_batch_job(GetBatchJob(id=job.id))
        await jobs.run(job.id)  # the redelivery
        await jobs.run(job.id)  # a duplicate after the outcome: nothing to do
        done = await inference.get_batch_job(GetBatchJob(id=job.id))
        chunks = [c async for c in inference.fetch_batch_results(FetchBatchResults(id=job.id))]
    finally:
        await platform.stop()

    assert (halfway.status, halfway.rows_done) == ("running", 6)
    assert (done.status, done.rows_done) == ("succeeded", 10)
    assert calls == [3, 3, 3, 3, 1]  # chunk 3 twice (failed, then retried), nothing redone
    outputs = np.concatenate([c.outputs["y"].to_numpy() for c in chunks])
    np.testing.assert_allclose(outputs, expected(ROWS), rtol=1e-5)


async def test_queued_jobs_are_requeued_at_start_up(tmp_path: Path) -> None:
    platform = await _start(tmp_path)
    try:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        run_by_hand(platform)  # the job stays queued until the restart
        inference = platform.client("inference", caller="tests")
        job = await inference.submit_batch_job(
            SubmitBatchJob(model="lin:1", inputs={"x": Tensor.from_numpy(ROWS)})
        )
    finally:
        await platform.stop()

    restarted = await _start(tmp_path)
    try:
        done = await finished(restarted.client("inference", caller="tests"), job.id)
    finally:
        await restarted.stop()
    assert (done.status, done.rows_done) == ("succeeded", 10)
