"""Tasks through dramatiq's Redis broker between queues standing for separate processes, and
dead letters on both brokers.

The Redis tests skip locally without a server and are required in CI; each test has its own
namespace and deletes its keys at the end.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator

import pytest

from app.kernel.settings import Settings
from app.kernel.tasks import TaskQueue, make_task_queue, run_worker
from tests.conftest import REDIS_URL

WAIT_S = 10.0


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    """A key namespace private to the test; its keys are deleted at the end."""
    return redis_namespace


QueueFactory = Callable[..., TaskQueue]


@pytest.fixture
def make_queue() -> Iterator[QueueFactory]:
    """Task queues (each one a process of its own), stopped at the end."""
    made: list[TaskQueue] = []

    def factory(url: str = REDIS_URL, **options: object) -> TaskQueue:
        made.append(TaskQueue(url, worker_threads=1, **options))  # type: ignore[arg-type]
        return made[-1]

    yield factory
    for queue in made:
        queue.stop(timeout_ms=2000)


class Recorder:
    """An actor body recording its calls; it fails while ``failures`` is above zero."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[int, str]] = []
        self.called = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, n: int, label: str = "") -> None:
        with self._lock:
            self.calls.append((n, label))
            self.called.set()
            if self.failures > 0:
                self.failures -= 1
                raise RuntimeError(f"failing on {n}")


def test_a_message_crosses_from_a_sending_process_to_a_worker_process(
    namespace: str, make_queue: QueueFactory
) -> None:
    sender, worker = make_queue(namespace=namespace), make_queue(namespace=namespace)
    send = sender.actor(Recorder(), name="record")
    recorder = Recorder()
    worker.actor(recorder, name="record")

    send.send(41, label="hello")
    worker.start_workers()

    assert recorder.called.wait(WAIT_S)
    assert recorder.calls == [(41, "hello")]
    sender.broker.join("default", timeout=int(WAIT_S * 1000))


def test_an_actor_out_of_retries_is_dead_lettered_then_requeued(
    namespace: str, make_queue: QueueFactory
) -> None:
    sender, worker = make_queue(namespace=namespace), make_queue(namespace=namespace)
    send = sender.actor(Recorder(), name="flaky", max_retries=0)
    recorder = Recorder(failures=1)
    worker.actor(recorder, name="flaky", max_retries=0)
    worker.start_workers()

    message = send.send(7)
    sender.broker.join("default", timeout=int(WAIT_S * 1000))  # until acked or dead-lettered

    [dead] = sender.dead_letters()
    assert (dead.message_id, dead.actor_name, dead.queue_name) == (
        message.message_id,
        "flaky",
        "default",
    )
    assert (dead.args, dead.kwargs, dead.attempts) == ([7], {}, 1)
    assert dead.failed_at is not None
    assert worker.dead_letters() == [dead]  # the same keys, seen from the other process
    assert sender.dead_letters("other") == []

    recorder.called.clear()
    assert sender.requeue_dead_letters() == 1
    assert recorder.called.wait(WAIT_S)
    sender.broker.join("default", timeout=int(WAIT_S * 1000))
    assert recorder.calls == [(7, ""), (7, "")]
    assert sender.dead_letters() == []
    assert sender.requeue_dead_letters() == 0


def test_namespaces_keep_queues_apart(namespace: str, make_queue: QueueFactory) -> None:
    other_namespace = f"{namespace}:other"  # deleted with the test's keys
    ours, theirs = make_queue(namespace=namespace), make_queue(namespace=other_namespace)
    ours_recorder, theirs_recorder = Recorder(), Recorder()
    send = ours.actor(ours_recorder, name="record")
    theirs.actor(theirs_recorder, name="record")
    theirs.start_workers()  # polls its own namespace only

    for n in range(5):
        send.send(n)
    ours.start_workers()
    ours.broker.join("default", timeout=int(WAIT_S * 1000))

    assert sorted(n for n, _ in ours_recorder.calls) == list(range(5))
    assert theirs_recorder.calls == []
    assert theirs.dead_letters() == []


def test_run_worker_runs_until_sigterm(namespace: str, make_queue: QueueFactory) -> None:
    sender, worker = make_queue(namespace=namespace), make_queue(namespace=namespace)
    send = sender.actor(Recorder(), name="record")
    seen: list[int] = []

    def record_then_terminate(n: int) -> None:
        seen.append(n)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's handler is installed by now

    worker.actor(record_then_terminate, name="record")
    before = signal.getsignal(signal.SIGTERM)
    send.send(3)

    run_worker(worker, threads=1, timeout_ms=2000)  # returns once SIGTERM arrived

    assert seen == [3]
    assert signal.getsignal(signal.SIGTERM) is before


def test_run_worker_stops_when_told(make_queue: QueueFactory) -> None:
    queue = make_queue("memory://")
    recorder = Recorder()
    queue.actor(recorder, name="record").send(1)
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(queue,), kwargs={"stop": stop})
    thread.start()
    assert recorder.called.wait(WAIT_S)
    stop.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def test_the_memory_broker_keeps_dead_letters_too(make_queue: QueueFactory) -> None:
    queue = make_queue("memory://")
    recorder = Recorder(failures=1)
    message = queue.actor(recorder, name="flaky", max_retries=0).send(5)
    queue.start_workers()
    queue.broker.join("default", timeout=int(WAIT_S * 1000), fail_fast=False)  # type: ignore[attr-defined]

    [dead] = queue.dead_letters()
    assert (dead.message_id, dead.actor_name, dead.args, dead.attempts) == (
        message.message_id,
        "flaky",
        [5],
        1,
    )
    assert queue.requeue_dead_letters() == 1
    queue.broker.join("default", timeout=int(WAIT_S * 1000), fail_fast=False)  # type: ignore[attr-defined]
    assert recorder.calls == [(5, ""), (5, "")]
    assert queue.dead_letters() == []


def test_the_namespace_follows_the_redis_prefix() -> None:
    queue = make_task_queue(Settings(broker_url="memory://", redis_prefix="staging:"))
    assert queue.namespace == "staging"
    assert make_task_queue(Settings()).namespace == "quarry"
