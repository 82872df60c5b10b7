"""Tasks sent from one process run in a worker process; a worker killed mid-task loses nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.kernel.tasks import TaskQueue
from tests.conftest import REDIS_URL
from tests.fakes.task_worker import HEARTBEAT_MS, declare

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def wait_for(paths: list[Path], within: float = 60) -> list[Path]:
    """The paths still missing when they all exist or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        missing = [p for p in paths if not p.exists()]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.05)  # polling files another process writes, with a deadline


@pytest.fixture
def namespace(redis_namespace: str) -> str:
    return redis_namespace


def worker(namespace: str, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.task_worker", namespace, str(out), *extra], cwd=ROOT
    )


def test_a_killed_worker_mid_task_loses_nothing(namespace: str, tmp_path: Path) -> None:
    sender = TaskQueue(REDIS_URL, namespace=namespace, heartbeat_timeout_ms=HEARTBEAT_MS)
    declare(sender, tmp_path, hang=None)
    actor = sender.broker.get_actor("record")
    first = worker(namespace, tmp_path, "--hang", "0")
    second = None
    try:
        for n in range(10):
            actor.send(n)
        assert wait_for([tmp_path / "started-0"]) == []
        first.kill()  # dies holding message 0 unacknowledged
        first.wait(timeout=10)

        second = worker(namespace, tmp_path)
        missing = wait_for([tmp_path / f"done-{n}" for n in range(10)])
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
        sender.broker.close()

    assert missing == []
