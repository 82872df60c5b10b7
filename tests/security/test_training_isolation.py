"""Training runs in child processes: concurrent jobs, a killed training process, and an API
process that never imports torch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import Platform
from app.kernel.settings import Settings
from app.kernel.tasks import TaskQueue
from contracts.registry import ListVersions
from contracts.training import Dataset, GetTrainingJob, SubmitTrainingJob, TrainingJobSpec
from tests.fakes.server import Server

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")
CHILD = "app.modules.training.child"
needs_proc = pytest.mark.skipif(
    not Path("/proc/self/cmdline").exists(), reason="finds training processes in /proc"
)


def rows(count: int = 60) -> list[dict[str, Any]]:
    """Two separable classes: ``y`` is whether ``a + b > 0``."""
    return [
        {"a": float(i % 7 - 3), "b": float(i % 5 - 2), "y": int((i % 7 - 3) + (i % 5 - 2) > 0)}
        for i in range(count)
    ]


def spec(model: str, **changes: Any) -> dict[str, Any]:
    """A small logistic regression job (the JSON of a ``TrainingJobSpec``)."""
    return {
        "trainer": "logistic_regression",
        "model": model,
        "dataset": {"rows": rows(), "features": ["a", "b"], "label": "y"},
        "hyperparameters": {"epochs": 5},
        "device": "cpu",
        **changes,
    }


@pytest.mark.timeout(300)
async def test_four_jobs_submitted_at_once_all_succeed(tmp_path: Path) -> None:
    async with Platform(Settings(data_dir=tmp_path)) as platform:  # embedded defaults
        training = platform.client("training", caller="tests")
        registry = platform.client("registry", caller="tests")
        submitted = await asyncio.gather(
            *(
                training.submit_job(SubmitTrainingJob(spec=TrainingJobSpec(**_spec(f"m{i}"))))
                for i in range(4)
            )
        )
        done = [await _finished(training, job.id, within_s=280) for job in submitted]

        assert [(job.status, job.error) for job in done] == [("succeeded", None)] * 4
        assert [job.attempt for job in done] == [1, 1, 1, 1]
        for i, job in enumerate(done):
            versions = await registry.list_versions(ListVersions(name=f"m{i}"))
            assert [v.version for v in versions.items] == [job.version]


@pytest.mark.slow
@needs_proc
@pytest.mark.timeout(300)
def test_a_killed_training_process_fails_its_job_alone_after_its_attempts(
    tmp_path: Path,
) -> None:
    with (
        _server(tmp_path, QUARRY_TRAINING_PROCESSES="2") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        endless = {"epochs": 100_000, "patience": 100_000, "batch_size": 8}
        victim = _submit(client, spec("victim", hyperparameters=endless, max_attempts=2))
        healthy = _submit(client, spec("healthy"))

        for attempt in (1, 2):
            _wait(client, victim, lambda j, a=attempt: j["attempt"] == a and j["epoch"] >= 1)
            os.kill(_training_process(server, victim), signal.SIGKILL)
        job = _wait(client, victim, lambda j: j["status"] in TERMINAL)

        assert job["status"] == "failed"
        assert job["attempt"] == 2
        assert "training process killed by signal 9" in job["error"]
        assert "attempt 2 of 2" in job["error"]
        assert _wait(client, healthy, lambda j: j["status"] in TERMINAL)["status"] == "succeeded"
        answer = client.post("/v1/predict/healthy", json={"inputs": {"features": [[1.0, 2.0]]}})
        assert answer.status_code == 200, answer.text
        assert server.process is not None
        assert server.process.poll() is None  # the same API process answered throughout


@pytest.mark.slow
@needs_proc
@pytest.mark.timeout(300)
def test_a_killed_training_process_is_run_again_while_attempts_remain(tmp_path: Path) -> None:
    with (
        _server(tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        slow = {"epochs": 400, "patience": 400, "batch_size": 4}
        job_id = _submit(client, spec("again", hyperparameters=slow, max_attempts=2))
        _wait(client, job_id, lambda j: j["epoch"] >= 1)
        os.kill(_training_process(server, job_id), signal.SIGKILL)

        job = _wait(client, job_id, lambda j: j["status"] in TERMINAL, within_s=240)

        assert (job["status"], job["attempt"], job["error"]) == ("succeeded", 2, None)


def test_the_api_process_never_imports_torch(tmp_path: Path) -> None:
    script = f"""
import asyncio, json, sys
import msgspec
import app
from contracts.training import GetTrainingJob, SubmitTrainingJob, TrainingJobSpec

async def main():
    spec = msgspec.json.decode({json.dumps(json.dumps(spec("m")))}, type=TrainingJobSpec)
    async with app.connect(data_dir={str(tmp_path)!r}, log_level="WARNING") as q:
        job = await q.training.submit_job(SubmitTrainingJob(spec=spec))
        while job.status in ("queued", "running"):
            await asyncio.sleep(0.1)
            job = await q.training.get_job(GetTrainingJob(id=job.id))
        loaded = "torch" in sys.modules
        print(json.dumps({{"status": job.status, "error": job.error, "torch": loaded}}))

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {"status": "succeeded", "error": None, "torch": False}


def test_a_dedicated_queue_runs_its_messages_one_at_a_time_beside_the_others() -> None:
    queue = TaskQueue("memory://", worker_threads=2)
    started, release, ran = threading.Event(), threading.Event(), threading.Event()
    second = threading.Event()
    running: list[int] = []

    def slow(n: int) -> None:
        running.append(n)
        (started if n == 1 else second).set()
        release.wait(timeout=30)

    slow_actor = queue.actor(slow, name="slow", queue_name="slow", max_retries=0)
    quick = queue.actor(ran.set, name="quick", max_retries=0)
    queue.dedicate("slow", threads=1)
    queue.start_workers()
    try:
        slow_actor.send(1)
        slow_actor.send(2)
        assert started.wait(timeout=10)
        quick.send()

        assert ran.wait(timeout=10)  # not held up by the busy dedicated queue
        assert running == [1]  # the second waits for the first's thread
        release.set()
        assert second.wait(timeout=10)
    finally:
        release.set()
        queue.stop()


# --- helpers --------------------------------------------------------------------------------


def _spec(model: str) -> dict[str, Any]:
    fields = spec(model)
    return fields | {"dataset": Dataset(**fields["dataset"])}


async def _finished(training: Any, job_id: str, within_s: float) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        job = await training.get_job(GetTrainingJob(id=job_id))
        if job.status in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job still {job.status} after {within_s} s"
        await asyncio.sleep(0.1)


@contextlib.contextmanager
def _server(tmp_path: Path, **env: str) -> Iterator[Server]:
    """A `quarry serve` on embedded defaults (plus ``env``), stopped on exit."""
    server = Server(tmp_path / "data", env=env).start()
    try:
        yield server
    finally:
        server.stop()


def _submit(client: httpx.Client, body: dict[str, Any]) -> str:
    answer = client.post("/v1/training/jobs", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _wait(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    within_s: float = 150,
) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        job = client.get(f"/v1/training/jobs/{job_id}").json()
        if until(job):
            return dict(job)
        assert time.monotonic() < deadline, f"job after {within_s} s: {job}"
        time.sleep(0.1)  # polling another process's progress, with a deadline


def _training_process(server: Server, job_id: str) -> int:
    """The pid of the server's training process for ``job_id`` (from /proc)."""
    assert server.process is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        if CHILD.encode() in argv and job_id.encode() in argv:
            assert int(parent) == server.process.pid
            return int(entry.name)
    raise AssertionError(f"no training process for job {job_id}")
