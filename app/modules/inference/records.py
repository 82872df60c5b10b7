"""Prediction records: one compact record per prediction, batched in memory for monitoring.

:meth:`Recorder.record` never awaits: it appends to a bounded buffer (a full buffer drops the
record and counts it). A background task started with the module hands batches to the sink; a
slow sink fills the buffer and costs drops, never prediction latency. A sink that is unavailable
(monitoring or its database down) gets its batch back in the buffer and is tried again with
capped backoff, logged once per outage: records are kept up to the bound, never more. Records
never go through the transactional outbox. Without a monitoring module the default sink drops
every batch (counted), with one start-up warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from datetime import UTC, datetime
from typing import Protocol

from app.kernel import metrics
from app.kernel.backoff import Backoff
from app.kernel.errors import dependency_failure
from contracts.common import DeadlineExceeded, Tensor, Unavailable
from contracts.inference import PredictionRecord
from contracts.monitoring import MonitoringService, RecordPredictions

__all__ = [
    "BATCH_SIZE",
    "CAPACITY",
    "DroppingSink",
    "MonitoringSink",
    "PredictionSink",
    "Recorder",
]

CAPACITY = 10_000
"""Records held in memory at most; more are dropped (counted) until the sink catches up."""
BATCH_SIZE = 500
"""Records handed to the sink in one ``write``."""
INTERVAL_S = 0.5
"""How long a partial batch waits before it is handed over."""
STOP_FLUSH_S = 2.0
"""How long shutdown waits for the last batches to be written."""
RETRY_CAP_S = 10.0
"""The longest wait between attempts while the sink is unavailable."""


class PredictionSink(Protocol):
    """Where prediction records go (monitoring's contract once that module is bound)."""

    async def write(self, records: list[PredictionRecord]) -> None:
        """Take a batch of records; may be slow, must not be awaited on the request path."""
        ...


class DroppingSink:
    """The sink without a monitoring module: drops every batch (the recorder counts them)."""

    bound = False

    async def write(self, records: list[PredictionRecord]) -> None:
        raise _Unbound


class MonitoringSink:
    """The sink when a monitoring module is bound (local or remote): its contract, in batches."""

    bound = True

    def __init__(self, monitoring: MonitoringService) -> None:
        self._monitoring = monitoring

    async def write(self, records: list[PredictionRecord]) -> None:
        await self._monitoring.record_predictions(RecordPredictions(records=records))


class _Unbound(Exception):
    """Raised by :class:`DroppingSink` so the recorder counts the batch as dropped."""


class Recorder:
    """Buffers prediction records and hands them to ``sink`` in the background."""

    def __init__(
        self,
        sink: PredictionSink | None = None,
        *,
        sample: float = 0.1,
        capacity: int = CAPACITY,
        batch_size: int = BATCH_SIZE,
        interval_s: float = INTERVAL_S,
        logger: logging.Logger | None = None,
    ) -> None:
        self.sink: PredictionSink = sink if sink is not None else DroppingSink()
        self.sample = sample
        self._capacity = capacity
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._log = logger or logging.getLogger("quarry.inference")
        self._buffer: deque[PredictionRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(
            "writing prediction records", self._log, base_s=interval_s, cap_s=RETRY_CAP_S
        )
        self._pause = 0.0
        self.recorded = 0
        """Records produced in this process."""
        self.written = 0
        """Records the sink accepted."""
        self.dropped = 0
        """Records lost: buffer full, sink failed, or no monitoring module bound."""
        self._records = metrics.shared(
            metrics.Counter,
            "quarry.inference.prediction_records",
            description="Prediction records produced.",
        ).series()
        self._drops = metrics.shared(
            metrics.Counter,
            "quarry.inference.prediction_records_dropped",
            description="Prediction records dropped (buffer full, sink failed or no monitoring"
            " bound).",
        ).series()

    @property
    def pending(self) -> int:
        """Records waiting in the buffer."""
        return len(self._buffer)

    def record(
        self,
        *,
        prediction_id: str,
        model: str,
        version: int | None,
        status: str,
        latency_s: float,
        outputs: dict[str, Tensor] | None = None,
        inputs: dict[str, Tensor] | None = None,
        deployment: str | None = None,
    ) -> None:
        """Add one record; never blocks. ``inputs`` are kept for a ``sample`` of records."""
        self.recorded += 1
        self._records.add(1)
        if len(self._buffer) >= self._capacity:
            self._drop(1)
            return
        attach = inputs is not None and self.sample > 0 and random.random() < self.sample
        self._buffer.append(
            PredictionRecord(
                prediction_id=prediction_id,
                model=model,
                version=version,
                status=status,
                latency_s=latency_s,
                at=datetime.now(UTC),
                outputs=outputs or {},
                inputs=inputs if attach else None,
                deployment=deployment,
            )
        )
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._drops.add(count)

    async def start(self) -> None:
        """Start the background flusher (warning once when no monitoring module is bound)."""
        if isinstance(self.sink, DroppingSink):
            self._log.warning(
                "no monitoring module is bound: prediction records are dropped (counted)"
            )
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="inference-prediction-records")

    async def stop(self) -> None:
        """Stop the flusher, writing what is buffered within ``STOP_FLUSH_S``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), STOP_FLUSH_S)
        self._drop(len(self._buffer))
        self._buffer.clear()

    async def flush(self) -> None:
        """Hand everything buffered to the sink now (for tests and shutdown)."""
        await self._drain()

    async def _run(self) -> None:
        while True:
            full_only = False
            if self._pause:  # the sink is unavailable: a full buffer does not hurry the retry
                await asyncio.sleep(self._pause)
                self._pause = 0.0
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._interval_s)
                    full_only = True  # a batch filled up: the remainder waits to fill too
                except TimeoutError:
                    pass
            self._wake.clear()
            await self._drain(full_only=full_only)

    async def _drain(self, *, full_only: bool = False) -> None:
        """Hand the buffer to the sink in batches; with ``full_only``, whole batches only."""
        least = self._batch_size if full_only else 1
        while len(self._buffer) >= least:
            count = min(self._batch_size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            try:
                await self.sink.write(batch)
            except asyncio.CancelledError:
                self._drop(len(batch))
                raise
            except _Unbound:
                self._drop(len(batch))
            except Exception as exc:
                if isinstance(exc, (Unavailable, DeadlineExceeded)) or dependency_failure(exc):
                    self._keep(batch)
                    self._pause = self._backoff.failed(exc)
                    return
                self._drop(len(batch))
                self._log.exception("prediction records could not be written")
            else:
                self.written += len(batch)
                self._backoff.succeeded()

    def _keep(self, batch: list[PredictionRecord]) -> None:
        """Put ``batch`` back in front of the buffer; what no longer fits is dropped (newest)."""
        self._buffer.extendleft(reversed(batch))
        over = len(self._buffer) - self._capacity
        for _ in range(max(0, over)):
            self._buffer.pop()
        self._drop(max(0, over))
