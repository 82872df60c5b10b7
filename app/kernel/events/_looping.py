"""A background loop with wake-ups, a graceful stop and ``drain`` bookkeeping.

The in-process relay and the Redis Streams publisher and consumer are each one task running
passes: a pass answers how long to sleep (0 to go again at once). A failing pass is retried with
capped exponential backoff (:class:`~app.kernel.backoff.Backoff`: one log line when the failures
start, one when a pass works again), so a database or Redis outage neither floods the log nor
stops the loop: it resumes by itself. A :meth:`Loop.settled` future is answered by the first
pass that began after it was asked for and found nothing outstanding (the pass calls
:meth:`Loop.answer` with the generation it began in). :func:`stop_loops` and :func:`settle`
stop and drain several at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from app.kernel.backoff import Backoff

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "Loop", "settle", "stop_loops", "wait_for_event"]

BACKOFF_BASE_S = 0.25
"""The wait after a loop's first failed pass; it doubles per failure, up to ``BACKOFF_CAP_S``."""
BACKOFF_CAP_S = 5.0
"""The longest wait between failing passes: how late, at most, a loop notices a recovery."""


class Loop:
    """One background task running :meth:`run_pass` until stopped."""

    def __init__(
        self,
        *,
        name: str,
        poll_s: float,
        logger: logging.Logger,
        extra: dict[str, Any],
        label: str | None = None,
        module: str | None = None,
    ) -> None:
        self.name = name
        self.label = label if label is not None else name
        """How the log names this loop (defaults to ``name``, which also names the task)."""
        self.poll_s = poll_s
        self.log = logger
        self.extra = extra
        self.backoff = Backoff(
            f"{self.label} pass",
            logger,
            base_s=BACKOFF_BASE_S,
            cap_s=BACKOFF_CAP_S,
            module=module,
            extra=extra,
        )
        """Paces the retries of failing passes and logs each run of failures once."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        self._requested = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def run_pass(self, generation: int) -> float:
        """One round of work; answers how long to sleep (0 when there may be more to do)."""
        raise NotImplementedError

    # --- lifecycle (event-loop thread) ------------------------------------------------------

    def start(self) -> None:
        """Start the task on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup, self.stopping = asyncio.Event(), asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=self.name)

    def request_stop(self) -> None:
        """Ask the task to stop after the work in flight, if any."""
        self.stopping.set()
        self._wakeup.set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running task (``None`` before :meth:`start`)."""
        return self._task

    def wake(self) -> None:
        """Make the task look for work now. Safe from any thread, and before :meth:`start`."""
        loop = self._loop
        if loop is None:
            return
        # A closed loop raises RuntimeError: the work then waits for the next start.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wakeup.set)

    def settled(self) -> asyncio.Future[None]:
        """A future resolved once a pass that began after this call found nothing to do."""
        if self._task is None or self._task.done() or self._loop is None:
            raise RuntimeError(f"{self.name} is not running")
        self._requested += 1
        future = self._loop.create_future()
        self._waiters.append((self._requested, future))
        self._wakeup.set()
        return future

    @property
    def awaited(self) -> bool:
        """Whether a :meth:`settled` future is waiting for an answer."""
        return any(not future.done() for _, future in self._waiters)

    def answer(self, generation: int) -> None:
        """Resolve the waiters asked for before the pass of ``generation`` began."""
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target <= generation:
                future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiters = waiting

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._wakeup.clear()
                generation = self._requested
                try:
                    delay = await self.run_pass(generation)
                except Exception as exc:
                    await wait_for_event(self.stopping, self.backoff.failed(exc))
                    continue
                self.backoff.succeeded()
                if delay > 0:
                    await wait_for_event(self._wakeup, delay)
        finally:
            error = RuntimeError(f"{self.name} stopped")
            for _target, future in self._waiters:
                if not future.done():
                    future.set_exception(error)
            self._waiters = []


async def wait_for_event(event: asyncio.Event, seconds: float) -> None:
    """Wait until ``event`` is set or ``seconds`` pass."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass


async def stop_loops(
    loops: Sequence[Loop], grace_s: float, logger: logging.Logger, what: str
) -> None:
    """Stop ``loops``, letting work in flight finish for up to ``grace_s`` seconds, then cancel
    the tasks still busy (logged as ``what``)."""
    for loop in loops:
        loop.request_stop()
    tasks = [loop.task for loop in loops if loop.task is not None]
    if not tasks:
        return
    _done, late = await asyncio.wait(tasks, timeout=grace_s)
    for task in late:
        logger.warning("%s did not stop in time; cancelling", what, extra={"task": task.get_name()})
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def settle(loops: Sequence[Loop]) -> None:
    """Wait until every one of ``loops`` has settled (see :meth:`Loop.settled`)."""
    waits = [loop.settled() for loop in loops]
    try:
        await asyncio.gather(*waits)
    finally:
        for wait in waits:
            wait.cancel()
