"""The task queue seam: dramatiq, on an in-process ``StubBroker`` with worker threads by default.

Modules declare actors in ``build`` against the broker handed over here (never with a
module-level ``@dramatiq.actor``, which would bind dramatiq's global default broker). With
``QUARRY_BROKER_URL=redis://...`` the messages go through dramatiq's ``RedisBroker`` under a
key namespace (``<namespace>:<queue>``), and ``quarry worker`` runs the workers
(:func:`run_worker`). A queue can have worker threads of its own (:meth:`TaskQueue.dedicate`):
at most that many of its messages run at once, and they never hold up other queues. A message
whose actor failed and used up its retries is dead-lettered: :meth:`TaskQueue.dead_letters`
lists those, :meth:`TaskQueue.requeue_dead_letters` sends them again.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dramatiq
import msgspec
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import q_name

if TYPE_CHECKING:
    from app.kernel.settings import Settings

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIME_LIMIT_MS",
    "DeadLetter",
    "TaskQueue",
    "make_task_queue",
    "run_worker",
]

_log = logging.getLogger("quarry.tasks")

DEFAULT_TIME_LIMIT_MS = 60 * 60 * 1000
"""Tasks run at most an hour unless their actor says otherwise (dramatiq's default is 10 min)."""
DEFAULT_MAX_RETRIES = 3
"""Failed tasks are retried three times unless their actor says otherwise (dramatiq's is 20)."""
DEFAULT_NAMESPACE = "quarry"
"""The Redis key namespace when none is given (keys are ``<namespace>:<queue>...``)."""

# Options a new attempt must not inherit from the dead-lettered one.
_ATTEMPT_OPTIONS = ("retries", "traceback", "requeue_timestamp", "redis_message_id", "eta")


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message whose actor failed and used up its retries."""

    message_id: str
    actor_name: str
    queue_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempts: int
    """How many times its actor ran (1 with ``max_retries=0``)."""
    failed_at: float | None
    """When it was dead-lettered, in seconds since the epoch (``None`` when unknown)."""


class TaskQueue:
    """A dramatiq broker plus, for ``memory://``, the worker threads that drain it."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        worker_threads: int = 2,
        namespace: str = DEFAULT_NAMESPACE,
        heartbeat_timeout_ms: int = 60_000,
        maintenance_per_million: int = 100_000,
    ) -> None:
        self.url = url
        self.worker_threads = worker_threads
        self.namespace = namespace
        """Prefix of every Redis key of this queue (``<namespace>:<queue>``); unused in memory."""
        self.broker: dramatiq.Broker = self._make_broker(
            url, namespace, heartbeat_timeout_ms, maintenance_per_million
        )
        self._workers: list[dramatiq.Worker] = []
        self._dedicated: dict[str, int] = {}

    @staticmethod
    def _make_broker(
        url: str, namespace: str, heartbeat_timeout_ms: int, maintenance_per_million: int
    ) -> dramatiq.Broker:
        if url.startswith("memory://"):
            return StubBroker()
        from dramatiq.brokers.redis import RedisBroker

        # A worker that stops heartbeating for heartbeat_timeout_ms is dead: the messages it held
        # unacknowledged go back to the queue when maintenance runs, which it does on
        # maintenance_per_million of a million commands (dramatiq's default is 1,000).
        broker: dramatiq.Broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=url,
            namespace=namespace,
            heartbeat_timeout=heartbeat_timeout_ms,
            maintenance_chance=maintenance_per_million,
        )
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

    def dedicate(self, queue_name: str, threads: int) -> None:
        """Run ``queue_name``'s messages on ``threads`` worker threads of their own: at most
        ``threads`` of them at once, whatever thread count :meth:`start_workers` is given, and
        never holding up (or held up by) the other queues' messages. Call before starting."""
        if threads < 1:
            raise ValueError(f"a dedicated queue needs at least one thread, got {threads}")
        self._dedicated[queue_name] = threads

    def start_workers(self, queues: set[str] | None = None, *, threads: int | None = None) -> None:
        """Start ``threads`` (default ``worker_threads``) worker threads consuming ``queues``
        (all declared queues by default), plus each dedicated queue's own threads. Does nothing
        when no actor is declared."""
        if self._workers or not self.broker.get_declared_actors():
            return  # nothing to run: no idle threads polling an empty broker
        count = threads if threads is not None else self.worker_threads
        declared = self.broker.get_declared_queues()
        wanted = set(queues) if queues is not None else {q_name(name) for name in declared}
        groups = [({name}, self._dedicated[name]) for name in sorted(wanted & set(self._dedicated))]
        shared = wanted - set(self._dedicated)
        if shared:
            groups.append((shared, count))
        # In-process queues are polled every 100 ms rather than every second, so stopping (each
        # consumer finishes its current poll) takes a tenth of the time.
        poll_ms = 100 if self.in_process else 1000
        if len(groups) > 1 and not any(
            isinstance(f, _SeveralWorkers) for f in self.broker.logger.filters
        ):
            self.broker.logger.addFilter(_SeveralWorkers())
        for names, n in groups:
            worker = dramatiq.Worker(
                self.broker, queues=names, worker_threads=n, worker_timeout=poll_ms
            )
            worker.start()
            self._workers.append(worker)
            _log.info("task workers started", extra={"threads": n, "queues": sorted(names)})

    def stop(self, timeout_ms: int = 10_000) -> None:
        """Stop the workers, letting running tasks finish within ``timeout_ms``; then close
        the broker's connections."""
        for worker in self._workers:
            worker.stop(timeout=timeout_ms)
        self._workers = []
        self.broker.close()
        client = getattr(self.broker, "client", None)
        if client is not None:  # the Redis broker leaves its connection pool open
            client.connection_pool.disconnect()

    # --- dead letters -----------------------------------------------------------------------

    def dead_letters(self, queue_name: str = "default", limit: int = 50) -> list[DeadLetter]:
        """``queue_name``'s newest ``limit`` dead-lettered messages, newest first, read without
        consuming them. Redis keeps them for dramatiq's ``dead_message_ttl`` (7 days)."""
        if isinstance(self.broker, StubBroker):
            proxies = self.broker.dead_letters_by_queue.get(queue_name, [])
            return (
                [_dead_letter(p, None, counted=True) for p in reversed(proxies[-limit:])]
                if limit
                else []
            )
        client, key = self.broker.client, self._dead_key(queue_name)  # type: ignore[attr-defined]
        scored = client.zrevrange(key, 0, limit - 1, withscores=True) if limit > 0 else []
        if not scored:
            return []
        bodies = client.hmget(f"{key}.msgs", [redis_id for redis_id, _ in scored])
        return [
            _dead_letter(dramatiq.Message.decode(body), score / 1000.0, counted=False)
            for (_id, score), body in zip(scored, bodies, strict=True)
            if body is not None
        ]

    def requeue_dead_letters(self, queue_name: str = "default") -> int:
        """Send ``queue_name``'s dead-lettered messages again, with a fresh set of retries;
        answer how many.

        On Redis each one is enqueued before it leaves the dead-letter queue, so a crash in
        between (or two calls at once) may send it twice: actors are idempotent.
        """
        if isinstance(self.broker, StubBroker):
            proxies = self.broker.dead_letters_by_queue.get(queue_name, [])
            taken = list(proxies)
            del proxies[: len(taken)]  # in place: the stub's consumers hold this very list
            for proxy in taken:
                self.broker.enqueue(_fresh_attempt(proxy))
            return len(taken)
        client, key = self.broker.client, self._dead_key(queue_name)  # type: ignore[attr-defined]
        count = 0
        for redis_id in client.zrange(key, 0, -1):
            body = client.hget(f"{key}.msgs", redis_id)
            if body is not None:
                message = dramatiq.Message.decode(body)
                self.broker.enqueue(_fresh_attempt(message))
                count += 1
            client.zrem(key, redis_id)
            client.hdel(f"{key}.msgs", redis_id)
        return count

    def _dead_key(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.XQ"


class _SeveralWorkers(logging.Filter):
    """Each worker adds dramatiq's worker middleware to the broker, and dramatiq warns about a
    second one: expected with dedicated queues, so not logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "_WorkerMiddleware" not in record.getMessage()


def _dead_letter(message: Any, failed_at: float | None, *, counted: bool) -> DeadLetter:
    """``counted``: the message's ``retries`` option counts its last run (the stub broker keeps
    the message as the worker left it; Redis keeps it as it was last enqueued)."""
    options = message.options
    if failed_at is None and options.get("requeue_timestamp") is not None:
        failed_at = options["requeue_timestamp"] / 1000.0
    return DeadLetter(
        message_id=message.message_id,
        actor_name=message.actor_name,
        queue_name=message.queue_name.removesuffix(".DQ"),
        args=list(message.args),
        kwargs=dict(message.kwargs),
        attempts=int(options.get("retries", 0)) + (0 if counted else 1),
        failed_at=failed_at,
    )


def _fresh_attempt(message: Any) -> dramatiq.Message[Any]:
    options = {k: v for k, v in message.options.items() if k not in _ATTEMPT_OPTIONS}
    return dramatiq.Message(
        queue_name=message.queue_name.removesuffix(".DQ"),
        actor_name=message.actor_name,
        args=tuple(message.args),
        kwargs=dict(message.kwargs),
        options=options,
        message_id=message.message_id,
    )


# --- composition helpers ----------------------------------------------------------------------


def make_task_queue(settings: Settings) -> TaskQueue:
    """The task queue ``settings.broker_url`` asks for, its Redis keys under
    ``settings.redis_prefix`` (``quarry:`` gives the namespace ``quarry``)."""
    namespace = settings.redis_prefix.rstrip(":") or DEFAULT_NAMESPACE
    return TaskQueue(
        settings.broker_url, worker_threads=settings.task_worker_threads, namespace=namespace
    )


def run_worker(
    queue: TaskQueue,
    queues: set[str] | None = None,
    threads: int = 8,
    *,
    stop: threading.Event | None = None,
    timeout_ms: int = 10_000,
) -> None:
    """Run ``threads`` worker threads on ``queue`` (its ``queues``, all declared by default; a
    dedicated queue runs on its own threads) until SIGTERM or SIGINT, or until ``stop`` is set;
    then let running tasks finish within ``timeout_ms`` and close the queue.

    Declare the actors first. The signal handlers are installed only when called on the main
    thread, and the previous ones are restored on return.
    """
    stopping = stop if stop is not None else threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda _signum, _frame: stopping.set())
    try:
        if not queue.broker.get_declared_actors():
            _log.warning("no task actors are declared here; the worker has nothing to run")
        queue.start_workers(queues, threads=threads)
        while not stopping.wait(0.5):  # a short wait keeps the main thread responsive
            pass
        _log.info("task workers stopping")
    finally:
        queue.stop(timeout_ms=timeout_ms)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
