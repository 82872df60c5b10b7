"""Materialization: a view's source rows into the offline and online stores, as a task.

:meth:`Materializer.submit` stores a queued run and sends ``features.materialize``; the actor
(on a worker thread) runs it on the module's event loop. A run reads the source in chunks of
``chunk_rows`` rows (blocking reads in a thread), checks each chunk whole, and writes it through
the push path: offline as an upsert in one transaction (re-writing a row changes nothing),
online only where newer. Progress is stored after each chunk. The view's watermark moves to the
run's end only when the run succeeded and covered everything after the old watermark, so it
never passes rows that were not stored; a failed, crashed or redelivered run is simply run
again from its first row, which stores nothing twice.

Views whose source sets ``materialize_every_seconds`` are run on that schedule by the one
replica holding the ``features.materialize_schedule`` lease.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.kernel import singleton
from app.modules.features import runs
from app.modules.features.keys import to_micros
from app.modules.features.source_rows import plain_rows, source_rows
from app.modules.features.sources import SourcePolicy, open_source
from contracts.common import InvalidInput, NotFound, QuarryError, Unavailable
from contracts.features import FeatureSource, FeatureView, Materialization, Materialize, Value

if TYPE_CHECKING:
    import dramatiq

    from app.kernel.db import Database
    from app.kernel.settings import Settings
    from app.kernel.tasks import TaskQueue

__all__ = ["ACTOR", "Materializer"]

ACTOR = "features.materialize"
TIME_LIMIT_MS = 6 * 60 * 60 * 1000
MAX_CHUNK_ROWS = 1_000_000
"""The most rows a chunk may hold: one chunk is read, checked and written in memory."""
END_OF_TIME_US = 253_402_300_799 * 1_000_000
"""9999-12-31T23:59:59Z: the end of a window that leaves nothing out."""

Row = tuple[str, int, dict[str, Value]]
Write = Callable[[FeatureView, list[Row]], Awaitable[object]]
GetView = Callable[[str], Awaitable[FeatureView]]
ListViews = Callable[[], Awaitable[list[FeatureView]]]


class Materializer:
    """Materialization runs of one features module."""

    def __init__(
        self,
        *,
        db: Database,
        tasks: TaskQueue,
        policy: SourcePolicy,
        get_view: GetView,
        list_views: ListViews,
        write: Write,
        settings: Settings | None = None,
        schedule_check_s: float = 30.0,
        logger: logging.Logger,
    ) -> None:
        self._db = db
        self._tasks = tasks
        self.policy = policy
        self._get_view = get_view
        self._list_views = list_views
        self._write = write
        self._settings = settings
        self._check_s = schedule_check_s
        self._log = logger
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[concurrent.futures.Future[None]] = set()
        self._schedule: asyncio.Task[None] | None = None
        # No retries: a failed run says why; running it again is the user's (or the schedule's).
        self._actor: dramatiq.Actor[Any, Any] = tasks.actor(
            self._run_in_worker, name=ACTOR, max_retries=0, time_limit_ms=TIME_LIMIT_MS
        )

    async def start(self) -> None:
        """Capture the loop runs execute on, requeue unfinished runs on the embedded broker
        (its messages do not outlive the process) and start the schedule."""
        self._loop = asyncio.get_running_loop()
        if self._tasks.in_process:
            for run_id in await self._db.read(runs.unfinished):
                self._actor.send(run_id)
        if self._settings is not None:
            lease = singleton.lease(
                "features.materialize_schedule", db=self._db, settings=self._settings
            )
            loop = singleton.run_as_singleton(
                lease, self._schedule_round, interval_s=self._check_s, logger=self._log
            )
            self._schedule = asyncio.create_task(loop, name="features.materialize_schedule")

    async def close(self) -> None:
        """Stop the schedule; cancel runs on this loop (they run again from the start later)."""
        self._loop = None
        for future in list(self._running):
            future.cancel()
        if self._schedule is not None:
            self._schedule.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._schedule

    # --- the contract -------------------------------------------------------------------------

    async def submit(self, request: Materialize) -> Materialization:
        """Queue a run of ``request.view``."""
        view = await self._get_view(request.view)
        if view.source is None:
            raise InvalidInput(
                f"feature view {view.name!r} has no source to materialize from",
                details={"view": view.name},
            )
        start = None if request.start is None else to_micros(request.start)
        end = None if request.end is None else to_micros(request.end)
        if request.chunk_rows > MAX_CHUNK_ROWS:
            raise InvalidInput(
                f"chunk_rows must be at most {MAX_CHUNK_ROWS:,}", details={"field": "chunk_rows"}
            )
        if start is not None and end is not None and start >= end:
            raise InvalidInput("start must be before end", details={"field": "start"})
        run_id = uuid.uuid4().hex
        chunk = request.chunk_rows
        await self._db.write(lambda conn: runs.insert(conn, run_id, view.name, (start, end), chunk))
        queued = await self.get(run_id)  # read before sending: a worker may start it at once
        self._actor.send(run_id)
        return queued

    async def get(self, run_id: str) -> Materialization:
        """A run by id; ``NotFound`` if there is none."""
        found = await self._db.read(lambda conn: runs.get(conn, run_id))
        if found is None:
            raise NotFound(f"no materialization {run_id!r}", details={"id": run_id})
        return found

    async def entity_rows(
        self, source: FeatureSource, size: int
    ) -> AsyncIterator[list[dict[str, Value]]]:
        """Every row of ``source`` (every column), ``size`` rows at a time (none: skipped)."""
        reader = await asyncio.to_thread(
            open_source, [], [], source, self.policy, every_column=True
        )
        try:
            await asyncio.to_thread(reader.check)
            chunks = reader.chunks(None, END_OF_TIME_US, min(size, MAX_CHUNK_ROWS))
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                rows = await asyncio.to_thread(plain_rows, chunk)
                if rows:
                    yield rows
        finally:
            await asyncio.to_thread(reader.close)

    # --- the actor ----------------------------------------------------------------------------

    def _run_in_worker(self, run_id: str) -> None:
        """The actor body, on a worker thread: run on the module's loop and wait."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise Unavailable("the features module is not running here", retry_after=5)
        future = asyncio.run_coroutine_threadsafe(self.run(run_id), loop)
        self._running.add(future)
        try:
            future.result()
        except BaseException:
            future.cancel()
            raise
        finally:
            self._running.discard(future)

    async def run(self, run_id: str) -> None:
        """Run ``run_id`` from its first row; a run with an outcome is left alone."""
        found = await self._db.read(lambda conn: runs.row(conn, run_id))
        if found is None:
            self._log.warning("materialization %s is gone; nothing to run", run_id)
            return
        end = found.end_ts if found.end_ts is not None else to_micros(datetime.now(UTC))
        if not await self._db.write(lambda conn: runs.claim(conn, run_id, end)):
            return
        try:
            mark = await self._load(run_id, found.view, found.start_ts, end, found.chunk_rows)
        except QuarryError as exc:
            await self._finish(run_id, "failed", exc.message)
            return
        except Exception as exc:
            self._log.warning("materialization %s failed", run_id, exc_info=True)
            await self._finish(run_id, "failed", f"{type(exc).__name__}: {exc}")
            return
        await self._finish(run_id, "succeeded", None, mark)

    async def _load(
        self, run_id: str, name: str, start: int | None, end: int, size: int
    ) -> int | None:
        view = await self._get_view(name)
        source = view.source
        if source is None:
            raise InvalidInput(f"feature view {name!r} no longer has a source")
        mark = await self._db.read(lambda conn: runs.watermark(conn, name))
        contiguous = start is None or (mark is not None and start <= mark)
        low = mark if start is None else start
        reader = await asyncio.to_thread(
            open_source, view.entities, view.features, source, self.policy
        )
        chunks = reader.chunks(low, end, size)

        def prepare() -> tuple[int, list[Row]] | None:
            """The next chunk read and checked (in a thread), or ``None`` at the end."""
            chunk = next(chunks, None)
            if chunk is None:
                return None
            rows = source_rows(chunk, view.entities, view.features, source, (low, end))
            return chunk.table.num_rows, rows

        pending: asyncio.Future[tuple[int, list[Row]] | None] | None = None
        try:
            total = await asyncio.to_thread(reader.total, low, end)
            await self._db.write(lambda conn: runs.progress(conn, run_id, done=0, total=total))
            done = written = 0
            pending = asyncio.ensure_future(asyncio.to_thread(prepare))
            while (ready := await pending) is not None:
                # the next chunk is read while this one is written
                pending = asyncio.ensure_future(asyncio.to_thread(prepare))
                count, rows = ready
                if rows:
                    await self._write(view, rows)
                done, written = done + count, written + len(rows)
                progress = functools.partial(
                    runs.progress, run_id=run_id, done=done, total=total, written=written
                )
                await self._db.write(progress)
        finally:
            if pending is not None and not pending.done():
                with contextlib.suppress(Exception):
                    await pending  # its thread cannot be stopped: let it end before closing
            await asyncio.to_thread(reader.close)
        if not contiguous:
            return mark
        return await self._db.write(lambda conn: runs.advance_watermark(conn, name, end))

    async def _finish(
        self, run_id: str, status: str, error: str | None, mark: int | None = None
    ) -> None:
        if error:
            self._log.warning("materialization %s failed: %s", run_id, error)
        await self._db.write(lambda conn: runs.finish(conn, run_id, status, error, mark))

    # --- the schedule -------------------------------------------------------------------------

    async def _schedule_round(self) -> None:
        views = [v for v in await self._list_views() if _every(v)]
        if not views:
            return
        last = await self._db.read(runs.last_runs)
        now = time.time()
        for view in views:
            if view.name in last:
                status, at = last[view.name]
                if status in ("queued", "running") or at.timestamp() + _every(view) > now:
                    continue
            try:
                await self.submit(Materialize(view=view.name))
            except Exception:
                self._log.warning(
                    "cannot queue the materialization of %s", view.name, exc_info=True
                )


def _every(view: FeatureView) -> int:
    return view.source.materialize_every_seconds if view.source is not None else 0
