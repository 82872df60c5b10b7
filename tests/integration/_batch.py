"""What the batch job tests share: the inference module's job runner, run by hand or with a
predict that fails part way, and waiting for a job's outcome."""

from __future__ import annotations

import asyncio
from typing import Any

from app.bootstrap import Platform
from app.modules.inference.batch_jobs import BatchJobs
from app.modules.inference.service import LocalInferenceService
from contracts.common import Unavailable
from contracts.inference import BatchJob, GetBatchJob, Predict, Prediction


def batch_jobs(platform: Platform) -> BatchJobs:
    """The inference module's batch job runner."""
    service = platform.built["inference"].service
    assert isinstance(service, LocalInferenceService)
    jobs = service._batch_jobs
    assert jobs is not None
    return jobs


def run_by_hand(platform: Platform) -> BatchJobs:
    """The runner, with submitted jobs left queued for the test to ``run`` itself."""
    jobs = batch_jobs(platform)
    jobs._actor.send = lambda *_args, **_kw: None  # type: ignore[method-assign, assignment]
    return jobs


def failing_on_call(jobs: BatchJobs, number: int) -> list[int]:
    """Make the runner's ``number``-th predict raise ``Unavailable``; answers the rows of each
    predict it makes, as they come."""
    real = jobs._predict
    calls: list[int] = []

    async def flaky(request: Predict) -> Prediction:
        calls.append(request.inputs["x"].shape[0])
        if len(calls) == number:
            raise Unavailable("the runtime went away")
        return await real(request)

    jobs._predict = flaky
    return calls


async def finished(inference: Any, job_id: str) -> BatchJob:
    """The job once it has succeeded or failed (polled: it runs on the task queue)."""
    for _ in range(1200):
        job: BatchJob = await inference.get_batch_job(GetBatchJob(id=job_id))
        if job.status in {"succeeded", "failed"}:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch job {job_id} did not finish: {job}")
