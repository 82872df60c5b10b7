"""Batch prediction jobs: inputs stored in chunks, run by a task actor through ``predict``.

Submission validates, pins the model version (unless the reference names a deployment), splits
the inputs into msgpack chunks and queues ``inference.run_batch_job``. The actor runs in a
dramatiq worker thread; it hands the work to the module's event loop and waits. Each chunk's
outputs and the new ``rows_done`` are stored in one transaction guarded by the old
``rows_done``, so a redelivered message resumes where the last attempt stopped and never stores
a chunk twice; the job row takes one outcome. Input errors fail the job with the reason;
other errors are retried by the task queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.modules.inference import store
from contracts.common import (
    Conflict,
    InvalidInput,
    NotFound,
    Tensor,
    Unavailable,
    UnprocessableInput,
)
from contracts.inference import BatchJob, BatchResultChunk, Predict, Prediction, SubmitBatchJob

if TYPE_CHECKING:
    import dramatiq

    from app.kernel.db import Database
    from app.kernel.tasks import TaskQueue

__all__ = ["ACTOR", "MAX_CHUNK_ROWS", "BatchJobs"]

ACTOR = "inference.run_batch_job"
MAX_CHUNK_ROWS = 65_536
MAX_RETRIES = 5
TIME_LIMIT_MS = 6 * 60 * 60 * 1000
PERMANENT = (InvalidInput, UnprocessableInput, NotFound)
"""Errors a retry cannot fix: the job fails with the reason."""

Resolve = Callable[[str], Awaitable[str]]
"""Pins a reference at submission: answers what the job runs (``name:N`` or a deployment)."""


class BatchJobs:
    """Batch jobs of one inference module, stored in its database."""

    def __init__(
        self,
        *,
        db: Database,
        tasks: TaskQueue,
        predict: Callable[[Predict], Awaitable[Prediction]],
        pin: Resolve,
        logger: logging.Logger,
    ) -> None:
        self._db = db
        self._tasks = tasks
        self._predict = predict
        self._pin = pin
        self._log = logger
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[concurrent.futures.Future[None]] = set()
        self._actor: dramatiq.Actor[Any, Any] = tasks.actor(
            self._run_in_worker,
            name=ACTOR,
            max_retries=MAX_RETRIES,
            time_limit_ms=TIME_LIMIT_MS,
        )

    async def start(self) -> None:
        """Capture the event loop jobs run on; on the embedded broker, requeue unfinished jobs
        (its messages do not outlive the process). A job that cannot be sent is failed with the
        reason; the others are sent all the same."""
        self._loop = asyncio.get_running_loop()
        if self._tasks.in_process:
            for job_id in await self._db.read(store.unfinished_jobs):
                try:
                    self._actor.send(job_id)
                except Exception as exc:  # this job's alone: it must not stop the start-up
                    await self._fail_at_start(job_id, exc)

    async def _fail_at_start(self, job_id: str, exc: Exception) -> None:
        self._log.error("batch job %s failed at start-up", job_id, exc_info=exc)
        reason = f"failed at start-up: it could not be queued again: {exc}"
        now = datetime.now(UTC)
        await self._db.write(lambda conn: store.finish_job(conn, job_id, "failed", reason, now))

    def close(self) -> None:
        """Cancel the jobs running on this loop (they resume from ``rows_done`` later)."""
        self._loop = None
        for future in list(self._running):
            future.cancel()

    # --- the contract -----------------------------------------------------------------------

    async def submit(self, request: SubmitBatchJob) -> BatchJob:
        if not 1 <= request.chunk_rows <= MAX_CHUNK_ROWS:
            raise InvalidInput(
                f"chunk_rows must be between 1 and {MAX_CHUNK_ROWS}",
                details={"chunk_rows": request.chunk_rows},
            )
        rows = _rows(request.inputs)
        target = await self._pin(request.model)
        version = int(target.rsplit(":", 1)[1]) if ":" in target else None
        now = datetime.now(UTC)
        job = BatchJob(
            id=uuid.uuid4().hex,
            model=request.model,
            status="queued",
            rows=rows,
            rows_done=0,
            version=version,
            created_at=now,
            updated_at=now,
        )
        arrays = {name: tensor.to_numpy() for name, tensor in request.inputs.items()}
        chunks = [
            (
                offset,
                {
                    name: Tensor.from_numpy(array[offset : offset + request.chunk_rows])
                    for name, array in arrays.items()
                },
            )
            for offset in range(0, rows, request.chunk_rows)
        ]

        def insert(conn: Any) -> None:
            store.insert_job(
                conn,
                job,
                target=target,
                chunk_rows=request.chunk_rows,
                coerce=request.coerce,
                chunks=chunks,
            )

        await self._db.write(insert)
        self._actor.send(job.id)
        return job

    async def get(self, job_id: str) -> BatchJob:
        found = await self._db.read(lambda conn: store.get_job(conn, job_id))
        if found is None:
            raise NotFound(f"no batch job {job_id!r}", details={"id": job_id})
        return found[0]

    async def results(self, job_id: str) -> AsyncIterator[BatchResultChunk]:
        job = await self.get(job_id)
        if job.status != "succeeded":
            raise Conflict(
                f"batch job {job_id!r} is {job.status}: results are available once it succeeds",
                details={"id": job_id, "status": job.status},
            )
        for offset in await self._db.read(lambda conn: store.result_offsets(conn, job_id)):
            outputs = await self._db.read(
                functools.partial(store.read_chunk, job_id=job_id, kind="output", offset=offset)
            )
            if outputs is not None:
                yield BatchResultChunk(offset=offset, outputs=outputs)

    # --- the actor --------------------------------------------------------------------------

    def _run_in_worker(self, job_id: str) -> None:
        """The actor body, on a worker thread: run the job on the module's loop and wait."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise Unavailable("the inference module is not running here", retry_after=5)
        future = asyncio.run_coroutine_threadsafe(self.run(job_id), loop)
        self._running.add(future)
        try:
            future.result()
        except BaseException:
            future.cancel()  # e.g. the time limit interrupted this thread: stop the work too
            raise
        finally:
            self._running.discard(future)

    async def run(self, job_id: str) -> None:
        """Run a job's remaining chunks (from ``rows_done``); a finished job is left alone."""
        found = await self._db.read(lambda conn: store.get_job(conn, job_id))
        if found is None:
            self._log.warning("batch job %s is gone; nothing to run", job_id)
            return
        job, row = found
        if not await self._db.write(lambda conn: store.start_job(conn, job_id, _now())):
            return  # it already has its outcome
        offset = job.rows_done
        while offset < job.rows:
            inputs = await self._db.read(
                functools.partial(store.read_chunk, job_id=job_id, kind="input", offset=offset)
            )
            if inputs is None:
                await self._fail(job_id, f"the inputs at row {offset} are missing")
                return
            try:
                prediction = await self._predict(
                    Predict(model=row.target, inputs=inputs, coerce=row.coerce)
                )
            except PERMANENT as exc:
                await self._fail(job_id, f"rows from {offset}: {exc.message}")
                return
            count = min(row.chunk_rows, job.rows - offset)

            def claim(
                conn: Any, at: int = offset, n: int = count, answer: Prediction = prediction
            ) -> bool:
                return store.claim_chunk(
                    conn,
                    job_id,
                    offset=at,
                    rows=n,
                    outputs=answer.outputs,
                    version=answer.version,
                    now=_now(),
                )

            if not await self._db.write(claim):
                return  # another attempt got there first, or the job has its outcome
            offset += count
        await self._db.write(lambda conn: store.finish_job(conn, job_id, "succeeded", None, _now()))

    async def _fail(self, job_id: str, reason: str) -> None:
        self._log.warning("batch job %s failed: %s", job_id, reason)
        await self._db.write(lambda conn: store.finish_job(conn, job_id, "failed", reason, _now()))


def _rows(inputs: dict[str, Tensor]) -> int:
    if not inputs:
        raise InvalidInput("a batch job needs at least one input")
    counts = {name: tensor.shape[0] if tensor.shape else 0 for name, tensor in inputs.items()}
    rows = set(counts.values())
    if len(rows) != 1 or 0 in rows:
        raise InvalidInput(
            "every input of a batch job needs the same number of rows (at least one)",
            details={"rows": counts},
        )
    return rows.pop()


def _now() -> datetime:
    return datetime.now(UTC)
