"""Batch prediction jobs: inputs stored in chunks, run by a task actor through ``predict``.

Submission validates, pins the model version (unless the reference names a deployment), splits
the inputs into msgpack chunks and queues ``inference.run_batch_job``; a job on a file or a
table stores what it reads and writes instead, and reads its rows at run time
(:mod:`.batch_files`). The actor runs in a
dramatiq worker thread; it hands the work to the module's event loop and waits. Each chunk's
outputs and the new ``rows_done`` are stored in one transaction guarded by the old
``rows_done``, so a redelivered message resumes where the last attempt stopped and never stores
a chunk twice; the job row takes one outcome. Input errors fail the job with the reason;
other errors are retried by the task queue. A job writing an output file writes each chunk's
part before claiming it, and joins the parts into the file before it succeeds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from app.kernel.sources import SourcePolicy
from app.modules.inference import batch_files, batch_output, store
from app.modules.inference.batch_files import FileJob, FileStamp, Work
from app.modules.inference.batch_output import OutputFile
from app.modules.inference.settings import InferenceSettings
from contracts.common import (
    Conflict,
    InvalidInput,
    NotFound,
    Tensor,
    Unavailable,
    UnprocessableInput,
)
from contracts.inference import (
    BatchJob,
    BatchResultChunk,
    Predict,
    Prediction,
    SubmitBatchJob,
)

if TYPE_CHECKING:
    import dramatiq

    from app.kernel.db import Database
    from app.kernel.settings import Settings
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
        settings: Settings | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
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
        spec = None
        if request.source is not None:
            if request.inputs:
                raise InvalidInput(
                    "a batch job reads inputs or a source, not both", details={"field": "inputs"}
                )
            rows, stamps = await asyncio.to_thread(self._check_files, request)
        else:
            rows, stamps = _rows(request.inputs), []
            if request.output is not None:
                await asyncio.to_thread(self._check_files, request)
        if request.source is not None or request.output is not None:
            spec = FileJob(source=request.source, output=request.output, files=stamps)
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
            output=request.output.path if request.output else None,
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
            for offset in range(0, rows if request.source is None else 0, request.chunk_rows)
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
            if spec is not None:
                store.insert_spec(conn, job.id, _SPEC.encode(spec))

        await self._db.write(insert)
        self._actor.send(job.id)
        return job

    def _policy(self) -> SourcePolicy:
        if self._settings is None:
            raise Unavailable("batch jobs on files need the module's settings")
        config = self._settings.module_config(InferenceSettings)
        return SourcePolicy.of(
            config.source_roots, config.source_databases, self._settings.data_dir
        )

    def _check_files(self, request: SubmitBatchJob) -> tuple[int, list[FileStamp]]:
        limit = (
            self._settings.module_config(InferenceSettings).max_queue_rows
            if self._settings is not None
            else MAX_CHUNK_ROWS
        )
        return batch_files.check_submission(request, self._policy(), limit)

    async def get(self, job_id: str) -> BatchJob:
        found = await self._db.read(lambda conn: store.get_job(conn, job_id))
        if found is None:
            raise NotFound(f"no batch job {job_id!r}", details={"id": job_id})
        spec = await self._spec(job_id)
        if spec is None or spec.output is None:
            return found[0]
        return msgspec.structs.replace(found[0], output=spec.output.path)

    async def _spec(self, job_id: str) -> FileJob | None:
        raw = await self._db.read(lambda conn: store.read_spec(conn, job_id))
        return None if raw is None else _SPEC_DECODER.decode(raw)

    async def results(self, job_id: str) -> AsyncIterator[BatchResultChunk]:
        job = await self.get(job_id)
        if job.output is not None:
            raise Conflict(
                f"batch job {job_id!r} writes its results to {job.output!r}",
                details={"id": job_id, "output": job.output},
            )
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
        spec = await self._spec(job_id) or FileJob()
        output = None
        if spec.output is not None:
            output = OutputFile(self._policy().path(spec.output.path), job_id)
        work = (
            batch_files.source_work(
                spec.source,
                self._policy(),
                target=row.target,
                chunk_rows=row.chunk_rows,
                rows_done=job.rows_done,
                files=spec.files,
            )
            if spec.source is not None
            else self._stored_work(job, row)
        )
        try:
            async for item in work:
                if not await self._score(job_id, item, output):
                    return  # another attempt got there first, or the job has its outcome
            if output is not None:
                await asyncio.to_thread(output.publish)
        except PERMANENT as exc:
            await self._fail(job_id, exc.message, output)
            return
        finally:
            await work.aclose()
        await self._db.write(lambda conn: store.finish_job(conn, job_id, "succeeded", None, _now()))

    async def _score(self, job_id: str, item: Work, output: OutputFile | None) -> bool:
        """Predict one chunk and claim it (its part written first); ``False`` when the claim
        was lost. Errors a retry cannot fix name the chunk's rows."""
        try:
            prediction = await self._predict(item.request)
        except PERMANENT as exc:
            raise type(exc)(f"{item.where}: {exc.message}", details=exc.details) from None
        outputs = prediction.outputs
        if output is not None:
            table = batch_output.results(item.where, item.offset, item.rows, item.keys, prediction)
            await asyncio.to_thread(output.write, item.offset, table)
            outputs = {}

        def claim(conn: Any) -> bool:
            return store.claim_chunk(
                conn,
                job_id,
                offset=item.offset,
                rows=item.rows,
                outputs=outputs,
                version=prediction.version,
                now=_now(),
            )

        return bool(await self._db.write(claim))

    async def _stored_work(self, job: BatchJob, row: Any) -> AsyncGenerator[Work]:
        offset = job.rows_done
        while offset < job.rows:
            inputs = await self._db.read(
                functools.partial(store.read_chunk, job_id=job.id, kind="input", offset=offset)
            )
            if inputs is None:
                raise InvalidInput(f"the inputs at row {offset} are missing")
            count = min(row.chunk_rows, job.rows - offset)
            request = Predict(model=row.target, inputs=inputs, coerce=row.coerce)
            yield Work(offset=offset, rows=count, request=request, where=f"rows from {offset}")
            offset += count

    async def _fail(self, job_id: str, reason: str, output: OutputFile | None = None) -> None:
        self._log.warning("batch job %s failed: %s", job_id, reason)
        if output is not None:
            await asyncio.to_thread(output.discard)
        await self._db.write(lambda conn: store.finish_job(conn, job_id, "failed", reason, _now()))


_SPEC = msgspec.msgpack.Encoder()
_SPEC_DECODER = msgspec.msgpack.Decoder(FileJob)


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
