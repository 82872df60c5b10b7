"""A job's log lines: what its run did, and what its training process printed.

A run gathers lines in a :class:`JobLog` (from its own thread and the thread relaying the
training process's stderr) and writes them with its other writes (:func:`store.append_logs`):
each line cut to :data:`~contracts.training.MAX_LOG_LINE` characters, the job keeping its
latest :data:`~contracts.training.MAX_LOG_LINES`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from app.modules.training import store
from contracts.common import NotFound
from contracts.training import MAX_LOG_LINE, MAX_LOG_LINES, GetJobLogs, JobLogs

if TYPE_CHECKING:
    from app.kernel.db import Database

__all__ = ["JobLog", "cut", "figures", "read_job_logs"]

_CONTROL = {i: " " for i in range(32) if i != 9} | {127: " "}
"""Control characters (but tabs) become spaces: a line stays one line, and printable."""


def cut(line: str) -> str:
    """``line`` without control characters, at most :data:`MAX_LOG_LINE` characters."""
    clean = line.translate(_CONTROL).rstrip()
    return clean if len(clean) <= MAX_LOG_LINE else clean[: MAX_LOG_LINE - 1] + "…"


def figures(values: Mapping[str, float]) -> str:
    """``name=value`` pairs of metrics, by name."""
    return " ".join(f"{k}={v:.6g}" for k, v in sorted(values.items()))


class JobLog:
    """Lines waiting to be written, safe to add to from any thread; at most
    :data:`MAX_LOG_LINES` wait (the oldest go first)."""

    def __init__(self) -> None:
        self._lines: deque[tuple[float, str]] = deque(maxlen=MAX_LOG_LINES)
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        """Keep ``line`` (cut) with the time now."""
        text = cut(line)
        if text:
            with self._lock:
                self._lines.append((time.time(), text))

    def take(self) -> list[tuple[float, str]]:
        """The waiting lines, oldest first; none wait after."""
        with self._lock:
            taken = list(self._lines)
            self._lines.clear()
        return taken

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._lines)


async def read_job_logs(db: Database, request: GetJobLogs) -> JobLogs:
    """:meth:`contracts.training.TrainingService.get_job_logs` over the module's database."""
    found = await db.read(lambda conn: store.job_logs(conn, request.id, request.limit))
    if found is None:
        raise NotFound(f"no training job {request.id!r}", details={"id": request.id})
    lines, dropped = found
    return JobLogs(id=request.id, lines=lines, dropped=dropped)
