"""The task queue seam runs actors on in-process worker threads with the embedded broker."""

from __future__ import annotations

import threading

from app.kernel.tasks import TaskQueue


def test_actors_declared_on_the_queue_run_on_in_process_workers() -> None:
    queue = TaskQueue("memory://", worker_threads=2)
    done = threading.Event()
    seen: list[int] = []

    def add(a: int, b: int) -> None:
        seen.append(a + b)
        done.set()

    actor = queue.actor(add, name="add", max_retries=0, time_limit_ms=5_000)
    queue.start_workers()
    try:
        actor.send(2, 3)
        assert done.wait(timeout=10)
    finally:
        queue.stop()

    assert seen == [5]
    assert actor.options["max_retries"] == 0
    assert actor.options["time_limit"] == 5_000
    assert queue.in_process


def test_redis_urls_choose_the_redis_broker() -> None:
    queue = TaskQueue("redis://127.0.0.1:6379/15")
    try:
        assert not queue.in_process
        assert type(queue.broker).__name__ == "RedisBroker"
    finally:
        queue.broker.close()
