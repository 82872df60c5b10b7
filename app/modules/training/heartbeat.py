"""A running job's heartbeat, and the ways a run is told to stop.

A :class:`Heartbeat` refreshes the job's heartbeat from a thread while the run waits on its
training process, records epochs, and remembers what the answers said: cancellation asked for,
or the job taken over by another run. :meth:`Heartbeat.check` turns that, or the job's time
limit, into the exception the run stops with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["Cancelled", "Heartbeat", "Superseded", "TimedOut"]

Beat = Callable[[], "bool | None"]
"""Refresh the heartbeat: cancellation asked for, or ``None`` when the run lost the job."""
Epochs = Sequence[tuple[int, dict[str, float]]]
Progress = Callable[[int, int, dict[str, float], Epochs], "bool | None"]
"""Record an epoch (and the ``(epoch, metrics)`` of earlier ones not yet recorded), answering
like :data:`Beat`."""


class Cancelled(Exception):
    """Cancellation was asked for; the run stops at its next check."""


class TimedOut(Exception):
    """The run went past its job's ``time_limit_s``."""


class Superseded(Exception):
    """Another run took the job (this one's heartbeat went stale): this one stops quietly."""


class Heartbeat:
    """Keeps a run's heartbeat fresh from a thread; remembers cancellation and loss."""

    def __init__(
        self,
        job_id: str,
        *,
        beat: Beat,
        progress: Progress,
        interval_s: float,
        deadline: float,
        logger: logging.Logger,
    ) -> None:
        self._job_id = job_id
        self._beat = beat
        self._progress = progress
        self._interval_s = interval_s
        self._deadline = deadline
        self._log = logger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)
        self.cancelled = False
        self.lost = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def progress(
        self,
        epoch: int,
        epochs: int,
        metrics: dict[str, float],
        earlier: Sequence[tuple[int, dict[str, float]]] = (),
    ) -> None:
        """Record an epoch (with ``earlier`` ones not recorded yet), then :meth:`check`."""
        self._note(self._progress(epoch, epochs, metrics, earlier))
        self.check()

    def check(self) -> None:
        """Raise what the run must stop with, if anything."""
        if self.lost:
            raise Superseded(self._job_id)
        if self.cancelled:
            raise Cancelled(self._job_id)
        if time.monotonic() > self._deadline:
            raise TimedOut(self._job_id)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._note(self._beat())
            except Exception:  # a database hiccup: the next beat may work
                self._log.warning("heartbeat of job %s failed", self._job_id, exc_info=True)

    def _note(self, flag: bool | None) -> None:
        if flag is None:
            self.lost = True
        elif flag:
            self.cancelled = True
