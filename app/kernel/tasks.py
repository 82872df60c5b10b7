"""The task queue seam: dramatiq, on an in-process ``StubBroker`` with worker threads by default.

Modules declare actors in ``build`` against the broker handed over here (never with a
module-level ``@dramatiq.actor``, which would bind dramatiq's global default broker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

__all__ = ["TaskQueue"]

_log = logging.getLogger("quarry.tasks")

DEFAULT_TIME_LIMIT_MS = 60 * 60 * 1000
"""Tasks run at most an hour unless their actor says otherwise (dramatiq's default is 10 min)."""
DEFAULT_MAX_RETRIES = 3
"""Failed tasks are retried three times unless their actor says otherwise (dramatiq's is 20)."""


class TaskQueue:
    """A dramatiq broker plus, for ``memory://``, the worker threads that drain it."""

    def __init__(self, url: str = "memory://", *, worker_threads: int = 2) -> None:
        self.url = url
        self.worker_threads = worker_threads
        self.broker: dramatiq.Broker = self._make_broker(url)
        self._worker: dramatiq.Worker | None = None

    @staticmethod
    def _make_broker(url: str) -> dramatiq.Broker:
        if url.startswith("memory://"):
            return StubBroker()
        from dramatiq.brokers.redis import RedisBroker

        broker: dramatiq.Broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
        return broker

    @property
    def in_process(self) -> bool:
        """Whether tasks run in this process (the ``memory://`` broker)."""
        return isinstance(self.broker, StubBroker)

    def actor(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        queue_name: str = "default",
        max_retries: int = DEFAULT_MAX_RETRIES,
        time_limit_ms: int = DEFAULT_TIME_LIMIT_MS,
        **options: Any,
    ) -> dramatiq.Actor[Any, Any]:
        """Declare ``fn`` as an actor on this queue's broker, with explicit limits."""
        declare = dramatiq.actor(
            actor_name=name,
            queue_name=queue_name,
            broker=self.broker,
            max_retries=max_retries,
            time_limit=time_limit_ms,
            **options,
        )
        return declare(fn)

    def start_workers(self, queues: set[str] | None = None) -> None:
        """Start worker threads consuming ``queues`` (all declared queues by default)."""
        if self._worker is not None or not self.broker.get_declared_actors():
            return  # nothing to run: no idle threads polling an empty broker
        self._worker = dramatiq.Worker(
            self.broker, queues=queues, worker_threads=self.worker_threads
        )
        self._worker.start()
        _log.info("task workers started", extra={"threads": self.worker_threads})

    def stop(self, timeout_ms: int = 10_000) -> None:
        """Stop the workers, letting running tasks finish within ``timeout_ms``."""
        if self._worker is not None:
            self._worker.stop(timeout=timeout_ms)
            self._worker = None
        self.broker.close()
