"""Adaptive batching in front of one model version.

Requests wait in one queue bounded in rows. Whenever a runner is free it takes whole requests
from the head of the queue, up to ``max_batch_size`` rows of the same per-row shape, joins their
inputs, runs the session once in a worker thread and hands each request its slice of the
outputs. When the queue is idle nothing waits (``max_queue_delay_ms`` 0, the default); a delay
lets a batch that is not full wait that long, from its oldest request, for more rows.

There are no background tasks: submitting and finishing a batch both dispatch the next one, so
a request costs at most one thread hop and no task switch beyond awaiting its own future.

**Small models stay on the event loop.** A hop to a runner thread and back costs more than a
small model's run (50-100 µs against 10 µs for a small MLP), and on a busy process the runner
thread also contends with the loop for the interpreter lock. So a version whose measured run
time (a moving average over its recent runs, scaled to the rows at hand) is under
``inline_max_s`` (:data:`INLINE_MAX_S`) never leaves the loop's thread:

- when nothing is running or queued, and no other task ran a model inline in this turn of the
  event loop, the request runs at once on the caller's thread (inline);
- under concurrency the others queue, and at the end of the turn what is queued runs on the
  loop's thread, in batches of up to ``max_batch_size`` rows, so that every request that
  arrives in the turn joins one.

A batch expected to take longer runs on a runner thread, where the session releases the
interpreter lock and the loop goes on serving. A version is never run on the loop before its
first measured run. A caller predicting in a tight loop never waits for the event loop on the
inline path, so every :data:`INLINE_STREAK` inline runs without a loop turn it yields once:
background work (prediction records, events) keeps running.

Scaling signals, per model and version on ``/metrics`` (about a microsecond each per request):
``quarry_inference_queue_rows`` (rows waiting to run), ``quarry_inference_requests_in_flight``
(requests submitted and not yet answered) and ``quarry_inference_batch_size_rows`` (a histogram
of rows per run). A horizontal autoscaler reads the first two through the Prometheus adapter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from app.kernel import metrics
from contracts.common import (
    DeadlineExceeded,
    InternalError,
    QuarryError,
    Unavailable,
    UnprocessableInput,
)
from contracts.registry import Signature

__all__ = ["INLINE_MAX_S", "INLINE_STREAK", "Batcher", "Runnable"]

Array = npt.NDArray[Any]
Outputs = dict[str, Array]
Results = Sequence[Outputs | Exception] | BaseException
"""Per request outputs or error, or one error for the whole batch."""
INLINE_MAX_S = 100e-6
"""Runs expected to take less than this (seconds) run on the event loop's thread."""
INLINE_STREAK = 4
"""Inline runs of one task without a turn of the event loop before it yields to the loop."""
_EWMA = 0.2
"""Weight of the latest run in the moving averages of run time and rows."""
_SCAN_LIMIT = 256
"""Most queued requests one batch formation looks at, so mixed shapes never cost O(queue²)."""
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
"""Bounds of the rows-per-run histogram."""


class _Signals:
    """The batcher's gauges and histogram, bound to one model version's labels."""

    def __init__(self, model: Runnable) -> None:
        self.labels = {"model": model.name, "version": str(model.version)}
        self.queue_rows = metrics.shared(
            metrics.UpDownCounter,
            "quarry.inference.queue.rows",
            unit="{row}",
            description="Rows waiting to run, per model version.",
        ).series(self.labels)
        self.in_flight = metrics.shared(
            metrics.UpDownCounter,
            "quarry.inference.requests.in_flight",
            unit="{request}",
            description="Predictions submitted to a model version and not yet answered.",
        ).series(self.labels)
        self.batch_size = metrics.shared(
            metrics.Histogram,
            "quarry.inference.batch.size",
            unit="{row}",
            description="Rows per model run.",
            buckets=BATCH_SIZE_BUCKETS,
        ).series(self.labels)


class Runnable(Protocol):
    """What a batcher runs: :class:`~app.modules.inference.runtime.LoadedModel` or a fake."""

    name: str
    version: int
    signature: Signature

    def run(self, feeds: dict[str, Array]) -> Outputs:
        """Run one batch (blocking)."""
        ...


@dataclass(slots=True, eq=False)
class _Request:
    feeds: dict[str, Array]
    rows: int
    deadline: float | None
    future: asyncio.Future[Outputs]
    queued_at: float
    key: tuple[tuple[int, ...], ...] | None = None
    queued: bool = True

    def shape_key(self) -> tuple[tuple[int, ...], ...]:
        """The per-row shape of every input: only requests that agree can be joined."""
        if self.key is None:
            self.key = tuple(array.shape[1:] for array in self.feeds.values())
        return self.key


class _Runners:
    """Threads taking work from a ``SimpleQueue``: a cheaper hand-off than a thread pool's.

    No ``Future`` per call and no extra loop callback: on a loaded 2-core machine a round trip
    from the loop through one of these threads measured 15-40 µs less than ``run_in_executor``.
    """

    def __init__(self, count: int, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[Any], None], Any] | None] = (
            queue.SimpleQueue()
        )
        self._count = count
        self._name = name
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def submit(self, fn: Callable[[Any], None], arg: Any) -> None:
        if self._stopped:
            raise RuntimeError("the runners have stopped")
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._serve, name=f"{self._name}-{i}", daemon=True)
                for i in range(self._count)
            ]
            for thread in self._threads:
                thread.start()
        self._work.put((fn, arg))

    def shutdown(self, *, wait: bool = False) -> None:
        self._stopped = True
        for _ in self._threads:
            self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            fn, arg = item
            fn(arg)


class Batcher:
    """Batches concurrent predictions for one model version; see the module docstring.

    ``runners`` batches run at once, on ``executor`` when given, else on ``runners`` threads
    the batcher owns and stops on :meth:`close`. ``batches_run`` and ``rows_run`` count what
    was sent to the model. ``clock`` is ``time.monotonic``, the clock of call deadlines.
    """

    def __init__(
        self,
        model: Runnable,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_rows: int,
        runners: int = 1,
        executor: concurrent.futures.Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        inline_max_s: float = INLINE_MAX_S,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue_rows = max_queue_rows
        self.batches_run = 0
        self.rows_run = 0
        self._delay = max_queue_delay_ms / 1000
        self._runners = runners
        self._owns_executor = executor is None
        self._executor: concurrent.futures.Executor | _Runners = executor or _Runners(
            runners, f"quarry-infer-{model.name}-{model.version}"
        )
        self._clock = clock
        self._joinable = _joinable(model.signature)
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._active = 0
        """Batches running, on runners or booked to run on the loop."""
        self._loop_run_booked = False
        """Whether a batch is booked to run on the loop at the end of this turn."""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._idle: asyncio.Event | None = None
        self._signals = _Signals(model)
        self._inline_max_s = inline_max_s
        self.inline_runs = 0
        """Requests run at once on the caller's thread (see the module docstring)."""
        self.loop_batches = 0
        """Batches of queued requests run on the event loop's thread at the end of a turn."""
        self._run_s = 0.0
        """Moving average of a run's seconds (0 until the first run is measured)."""
        self._run_rows = 1.0
        """Moving average of a run's rows."""
        self._inline_task: asyncio.Task[Any] | None = None
        """The task that ran a model inline in this loop turn (cleared at the next turn)."""
        self._streak = 0
        """Inline runs since the loop last turned."""

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has begun: new requests are refused."""
        return self._closing

    @property
    def queued_rows(self) -> int:
        """Rows waiting to run."""
        return self._queued_rows

    async def submit(self, feeds: dict[str, Array], rows: int, deadline: float | None) -> Outputs:
        """Run ``feeds`` (``rows`` rows, checked by ``prepare_inputs``) in the next batch.

        Raises :class:`Unavailable` when the queue is full or the batcher closed,
        :class:`DeadlineExceeded` when ``deadline`` (``time.monotonic``) passes before the
        batch forms, and the model's own error when its batch fails.
        """
        self._admit(rows, deadline)
        loop = self._loop or self._bind_loop()
        if self._may_inline(rows):
            outputs = self._run_inline(loop, feeds, rows)
            if self._streak >= INLINE_STREAK:
                await asyncio.sleep(0)  # let the loop turn (it resets the streak)
            return outputs
        future: asyncio.Future[Outputs] = loop.create_future()
        request = _Request(feeds, rows, deadline, future, self._clock())
        signals = self._signals
        signals.in_flight.add(1)
        self._queue.append(request)
        self._queued_rows += rows
        signals.queue_rows.add(rows)
        try:
            self._dispatch()
            return await future
        except asyncio.CancelledError:
            self._dequeue(request)
            raise
        finally:
            signals.in_flight.add(-1)

    async def close(self) -> None:
        """Refuse new requests, run the queued ones, then stop the batcher's own threads."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._dispatch()
        if self._active or self._queue:
            self._idle = self._idle or asyncio.Event()
            await self._idle.wait()
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    # --- the caller's thread ----------------------------------------------------------------

    def _short(self, rows: int) -> bool:
        """Whether a run of ``rows`` rows is expected to take under ``inline_max_s`` (never
        before the first measured run)."""
        run_s = self._run_s
        return bool(run_s) and run_s * max(1.0, rows / self._run_rows) <= self._inline_max_s

    def _may_inline(self, rows: int) -> bool:
        if self._active or self._queue or not self._short(rows):
            return False
        owner = self._inline_task
        return owner is None or owner is asyncio.current_task()

    def _run_inline(
        self, loop: asyncio.AbstractEventLoop, feeds: dict[str, Array], rows: int
    ) -> Outputs:
        if self._inline_task is None:
            self._inline_task = asyncio.current_task()
            loop.call_soon(self._end_turn)
        self._streak += 1
        self.inline_runs += 1
        self._count_run(rows)
        started = time.perf_counter()
        try:
            outputs = self.model.run(feeds)
        except Exception as exc:
            raise _public(exc, self.model) from None
        self._measured(time.perf_counter() - started, rows)
        return outputs

    def _end_turn(self) -> None:
        self._inline_task = None
        self._streak = 0

    def _measured(self, seconds: float, rows: int) -> None:
        """Fold one run into the moving averages (from any thread: a lost update is harmless).

        A run counts for at most twice the average so far: one the OS preempted must not send
        a fast model off this path for long, while a model that really got slower still moves
        the average up by a fifth per run."""
        if not self._run_s:
            self._run_s, self._run_rows = seconds, float(rows)
            return
        self._run_s += _EWMA * (min(seconds, 2 * self._run_s) - self._run_s)
        self._run_rows += _EWMA * (rows - self._run_rows)

    # --- admission and dispatch -------------------------------------------------------------

    @property
    def _label(self) -> str:
        return f"{self.model.name}:{self.model.version}"

    def _admit(self, rows: int, deadline: float | None) -> None:
        if self._closing:
            raise Unavailable(f"model {self._label} is being unloaded", retry_after=1)
        if rows > self.max_queue_rows:
            raise UnprocessableInput(
                f"batch of {rows} rows exceeds the limit {self.max_queue_rows}",
                details={"rows": rows, "limit": self.max_queue_rows},
            )
        if self._queued_rows + rows > self.max_queue_rows:
            raise Unavailable(
                f"model {self._label}'s queue is full ({self._queued_rows} rows waiting)",
                retry_after=1,
                details={"model": self.model.name, "version": self.model.version},
            )
        if deadline is not None and deadline <= self._clock():
            raise DeadlineExceeded(f"the deadline passed before model {self._label} was asked")

    def _dequeue(self, request: _Request) -> None:
        """Stop counting a request's rows as queued: taken, dropped, or its caller went away."""
        if request.queued:
            request.queued = False
            self._queued_rows -= request.rows
            self._signals.queue_rows.add(-request.rows)

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _dispatch(self) -> None:
        while self._active < self._runners and self._queue and not self._wait_for_rows():
            if self._loop is not None and self._short(min(self._queued_rows, self.max_batch_size)):
                if not self._loop_run_booked:
                    # At the end of this turn, so that the requests still arriving in it join.
                    self._loop_run_booked = True
                    self._active += 1
                    self._loop.call_soon(self._run_on_loop)
                break
            batch = self._take_batch()
            if batch:
                self._start(batch, sum(request.rows for request in batch))
        if self._idle is not None and not self._active and not self._queue:
            self._idle.set()

    def _wait_for_rows(self) -> bool:
        """Whether to hold a part-full batch back; arms a timer for when it may go."""
        if self._delay <= 0 or self._closing or self._queued_rows >= self.max_batch_size:
            return False
        due = self._queue[0].queued_at + self._delay
        left = due - self._clock()
        if left <= 0:
            return False
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(left, self._on_timer)
        return True

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _take_batch(self) -> list[_Request]:
        """Whole requests from the head of the queue that can share one run."""
        now = self._clock()
        queue = self._queue
        batch: list[_Request] = []
        skipped: list[_Request] = []
        rows = looked = 0
        while queue and rows < self.max_batch_size and looked < _SCAN_LIMIT:
            request = queue.popleft()
            looked += 1
            if not self._alive(request, now):
                continue
            if batch and not self._fits(batch[0], request, rows):
                skipped.append(request)
                continue
            batch.append(request)
            rows += request.rows
            self._dequeue(request)
            if not self._joinable:
                break
        queue.extendleft(reversed(skipped))
        return batch

    def _alive(self, request: _Request, now: float) -> bool:
        """Drop a request whose caller left or whose deadline passed while it queued."""
        if request.deadline is not None and request.deadline <= now and not request.future.done():
            request.future.set_exception(
                DeadlineExceeded(f"the deadline passed while waiting for model {self._label}")
            )
        if request.future.done():
            self._dequeue(request)
            return False
        return True

    def _fits(self, head: _Request, request: _Request, rows: int) -> bool:
        return (
            rows + request.rows <= self.max_batch_size and request.shape_key() == head.shape_key()
        )

    # --- running ----------------------------------------------------------------------------

    def _count_run(self, rows: int) -> None:
        self.batches_run += 1
        self.rows_run += rows
        self._signals.batch_size.record(rows)

    def _run_on_loop(self) -> None:
        """On the loop, at the end of the turn that queued work: run what is queued here, batch
        after batch, while each is still expected to be short; hand a longer one to a runner."""
        self._loop_run_booked = False
        self._active -= 1
        for _ in range(len(self._queue)):  # what is queued now: each round takes one batch
            if self._active >= self._runners or not self._queue or self._wait_for_rows():
                break
            batch = self._take_batch()
            if not batch:
                continue
            rows = sum(request.rows for request in batch)
            if not self._short(rows):
                self._start(batch, rows)
                continue
            self.loop_batches += 1
            self._count_run(rows)
            try:
                results: Results = self._run(batch, rows)
            except Exception as exc:
                results = exc
            self._settle(batch, results)
        self._dispatch()

    def _start(self, batch: list[_Request], rows: int) -> None:
        """Run ``batch`` (``rows`` rows in all) on a runner thread."""
        self._active += 1
        self._count_run(rows)
        try:
            self._executor.submit(self._execute, batch)
        except RuntimeError:  # a shared executor was shut down under us
            self._active -= 1
            self._settle(
                batch, Unavailable(f"model {self._label}'s runners stopped", retry_after=1)
            )

    def _execute(self, batch: list[_Request]) -> None:
        """In a worker thread: run the batch and post the results back to the loop."""
        try:
            results: Results = self._run(batch, sum(request.rows for request in batch))
        except BaseException as exc:  # every failure goes to the callers, or they wait forever
            results = exc
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
            loop.call_soon_threadsafe(self._finish, batch, results)

    def _run(self, batch: list[_Request], rows: int) -> Sequence[Outputs | Exception]:
        """Run ``batch`` of ``rows`` rows (on the loop or a runner) and fold a successful run's
        time into the moving averages."""
        started = time.perf_counter()
        results = self._run_joined(batch)
        self._measured(time.perf_counter() - started, rows)
        return results

    def _run_joined(self, batch: list[_Request]) -> Sequence[Outputs | Exception]:
        if len(batch) == 1:
            return [self.model.run(batch[0].feeds)]
        counts = [request.rows for request in batch]
        joined = {
            name: np.concatenate([request.feeds[name] for request in batch])
            for name in batch[0].feeds
        }
        try:
            outputs = self.model.run(joined)
        except Exception:
            # One request's values may be what failed: run each alone so only it fails.
            return self._run_each(batch)
        split = _split(outputs, counts)
        return split if split is not None else self._run_each(batch)

    def _run_each(self, batch: list[_Request]) -> list[Outputs | Exception]:
        results: list[Outputs | Exception] = []
        for request in batch:
            try:
                results.append(self.model.run(request.feeds))
            except Exception as exc:
                results.append(exc)
        return results

    def _finish(self, batch: list[_Request], results: Results) -> None:
        """On the loop: settle each caller's future, then start what the queue holds."""
        self._active -= 1
        self._settle(batch, results)
        self._dispatch()

    def _settle(self, batch: list[_Request], results: Results) -> None:
        for i, request in enumerate(batch):
            if request.future.done():
                continue  # the caller went away
            result = results if isinstance(results, BaseException) else results[i]
            if isinstance(result, BaseException):
                request.future.set_exception(_public(result, self.model))
            else:
                request.future.set_result(result)


def _public(exc: BaseException, model: Runnable) -> BaseException:
    if isinstance(exc, QuarryError):
        return exc
    text = " ".join(str(exc).split())[:400] or type(exc).__name__
    return InternalError(
        f"model {model.name}:{model.version} failed to run: {text}",
        details={"reason": type(exc).__name__},
    )


def _split(outputs: Outputs, counts: list[int]) -> list[Outputs] | None:
    """Each request's rows of every output, as views; ``None`` if an output is not per row."""
    total = sum(counts)
    if any(np.ndim(array) == 0 or len(array) != total for array in outputs.values()):
        return None
    results: list[Outputs] = []
    start = 0
    for count in counts:
        stop = start + count
        results.append({name: array[start:stop] for name, array in outputs.items()})
        start = stop
    return results


def _joinable(signature: Signature) -> bool:
    """Whether requests can be joined: every input and output has a dynamic first dimension."""
    specs = [*signature.inputs, *signature.outputs]
    return all(spec.shape and spec.shape[0] < 0 for spec in specs)
