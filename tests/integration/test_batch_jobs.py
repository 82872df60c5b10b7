"""Batch jobs: the HTTP routes, resuming from ``rows_done``, and requeueing at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference.batch_jobs import BatchJobs
from app.modules.inference.service import LocalInferenceService
from contracts.common import Tensor, Unavailable
from contracts.inference import (
    BatchJob,
    FetchBatchResults,
    GetBatchJob,
    Predict,
    Prediction,
    SubmitBatchJob,
)
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx, linear_weights

ROWS = np.random.default_rng(3).normal(size=(10, 3)).astype(np.float32)


def expected(x: np.ndarray) -> np.ndarray:
    weight, bias = linear_weights(seed=0)
    return x @ weight + bias


def _jobs(platform: Platform) -> BatchJobs:
    service = platform.built["inference"].service
    assert isinstance(service, LocalInferenceService)
    jobs = service._batch_jobs
    assert jobs is not None
    return jobs


async def _start(tmp_path: Path) -> Platform:
    platform = Platform(Settings(data_dir=tmp_path, events_poll_s=0.05))
    await platform.start()
    return platform


async def _finished(platform: Platform, job_id: str) -> BatchJob:
    inference = platform.client("inference", caller="tests")
    for _ in range(400):
        job = await inference.get_batch_job(GetBatchJob(id=job_id))
        if job.status in {"succeeded", "failed"}:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch job {job_id} did not finish: {job}")


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

            await _finished(platform, job_id)
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
        jobs = _jobs(platform)
        jobs._actor.send = lambda *_args, **_kw: None  # type: ignore[method-assign]  # stays queued
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
        jobs = _jobs(platform)
        jobs._actor.send = lambda *_args, **_kw: None  # type: ignore[method-assign]  # run by hand
        real = jobs._predict
        calls: list[int] = []

        async def flaky(request: Predict) -> Prediction:
            calls.append(request.inputs["x"].shape[0])
            if len(calls) == 3:
                raise Unavailable("the runtime went away")
            return await real(request)

        jobs._predict = flaky
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
        _jobs(platform)._actor.send = lambda *_args, **_kw: None  # type: ignore[method-assign]
        inference = platform.client("inference", caller="tests")
        job = await inference.submit_batch_job(
            SubmitBatchJob(model="lin:1", inputs={"x": Tensor.from_numpy(ROWS)})
        )
    finally:
        await platform.stop()

    restarted = await _start(tmp_path)
    try:
        finished = await _finished(restarted, job.id)
    finally:
        await restarted.stop()
    assert (finished.status, finished.rows_done) == ("succeeded", 10)
