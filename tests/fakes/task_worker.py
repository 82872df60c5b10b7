"""A worker process for cross-process task tests: ``python -m tests.fakes.task_worker NS DIR``.

Its actor ``record(n)`` writes ``DIR/done-<n>``; with ``--hang N`` the worker announces
``DIR/started-<N>`` and then never finishes message N, so a test can kill it mid-task.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from app.kernel.tasks import TaskQueue, run_worker
from tests.conftest import REDIS_URL

HEARTBEAT_MS = 1500


def declare(queue: TaskQueue, out: Path, hang: int | None) -> None:
    def record(n: int) -> None:
        if n == hang:
            (out / f"started-{n}").touch()
            threading.Event().wait()  # held until the process is killed
        (out / f"done-{n}").touch()

    queue.actor(record, name="record", max_retries=3, time_limit_ms=600_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("namespace")
    parser.add_argument("out", type=Path)
    parser.add_argument("--hang", type=int)
    args = parser.parse_args()
    queue = TaskQueue(
        REDIS_URL,
        namespace=args.namespace,
        heartbeat_timeout_ms=HEARTBEAT_MS,
        maintenance_per_million=1_000_000,  # look for dead workers on every fetch
    )
    declare(queue, args.out, args.hang)
    run_worker(queue, threads=2)


if __name__ == "__main__":
    main()
