"""`quarry serve --workers 2` on embedded defaults: two processes answer on one port, share
their data, run training jobs in one of them, and stop together on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.kernel.settings import http_server_for
from tests.fakes.models import relu_model_bytes
from tests.fakes.server import Server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")
ROW = {"inputs": {"x": [[-1.0, 2.0, -3.0, 4.0]]}}
_LEADER = re.compile(r'^quarry_singleton_leader\{loop="([^"]+)"\} (\S+)$', re.MULTILINE)


def _answered_by(
    server: Server, worker: Callable[[str], bool], send: Callable[[httpx.Client], httpx.Response]
) -> httpx.Response:
    """``send`` on fresh connections (the kernel picks a worker per connection) until a worker
    that ``worker`` accepts answers."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = send(client)
        if worker(answer.headers["x-quarry-worker"]):
            return answer
    raise AssertionError("no answer from the worker asked for within 30 s")


def _leaders(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in _LEADER.finditer(text)}


def _scrape_leaders(
    server: Server, workers: set[str], deadline: float
) -> dict[str, dict[str, float]]:
    """The loops each of ``workers`` leads, from its ``/metrics``."""
    scraped: dict[str, dict[str, float]] = {}
    while set(scraped) != workers and time.monotonic() < deadline:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.get("/metrics")
        scraped[answer.headers["x-quarry-worker"]] = _leaders(answer.text)
    return scraped


def _each_loop_led_once(server: Server, workers: set[str]) -> bool:
    """Every singleton loop is led by exactly one worker (each takes its lease, none assumes
    it is alone), as the two workers' ``/metrics`` say."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scraped = _scrape_leaders(server, workers, deadline)
        loops = set().union(*scraped.values())
        if loops and all(sum(s.get(loop, 0.0) for s in scraped.values()) == 1 for loop in loops):
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_serve_one_port_share_models_and_stop_on_sigterm(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", args=("--workers", "2")).start()
    try:
        first = _answered_by(server, lambda _: True, lambda c: c.get("/readyz"))
        one = first.headers["x-quarry-worker"]
        second = _answered_by(server, lambda pid: pid != one, lambda c: c.get("/readyz"))
        other = second.headers["x-quarry-worker"]
        assert second.status_code == 200, second.text
        # QUARRY_HTTP_SERVER=auto: granian only while the workers leave a core free
        assert second.headers["server"] == http_server_for("auto", workers=2)

        files = {"file": ("m.onnx", relu_model_bytes(), "application/octet-stream")}
        registered = _answered_by(
            server,
            lambda pid: pid == one,
            lambda c: c.post("/v1/registry/models/relu/versions", files=files),
        )
        assert registered.status_code == 201, registered.text
        predicted = _answered_by(
            server, lambda pid: pid == other, lambda c: c.post("/v1/predict/relu", json=ROW)
        )
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["outputs"]["y"] == [[0.0, 2.0, 0.0, 4.0]]

        assert _each_loop_led_once(server, {one, other})

        seen: set[str] = set()
        for _ in range(20):
            with httpx.Client(base_url=server.url, timeout=30) as client:
                answer = client.post("/v1/predict/relu", json=ROW)
            assert answer.status_code == 200, answer.text
            seen.add(answer.headers["x-quarry-worker"])
        assert seen <= {one, other}

        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert not _alive(int(one))
        assert not _alive(int(other))
        assert "Traceback" not in server.log.read_text()
    finally:
        server.stop()


@contextlib.contextmanager
def _client_of(server: Server, worker: str) -> Iterator[httpx.Client]:
    """A client whose kept-alive connection reaches ``worker`` (the kernel picks a worker per
    connection), so a POST sent on it is handled there and only there."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            if client.get("/healthz").headers["x-quarry-worker"] == worker:
                yield client
                return
    raise AssertionError(f"no connection to worker {worker} within 30 s")


def _finished(server: Server, job_id: str, within_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    with httpx.Client(base_url=server.url, timeout=30) as client:
        while time.monotonic() < deadline:
            job: dict[str, Any] = client.get(f"/v1/training/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.2)  # polling a condition with a deadline, not standing in for one
    raise AssertionError(f"training job {job_id} did not finish within {within_s} s")


def _training_spec(model: str) -> dict[str, Any]:
    rows = [{"a": float(i % 7), "b": float(i % 5), "y": float(i % 7 - i % 5)} for i in range(40)]
    dataset = {"rows": rows, "features": ["a", "b"], "label": "y"}
    return {"trainer": "parent_pid", "model": model, "dataset": dataset, "device": "cpu"}


def test_training_jobs_sent_to_either_worker_all_run_under_the_leading_one(
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    env = {"QUARRY_TRAINING_TRAINERS": "tests.fakes.parent_trainer", "PYTHONPATH": str(ROOT)}
    server = Server(tmp_path / "data", env=env, args=("--workers", "2")).start()
    try:
        first = _answered_by(server, lambda _: True, lambda c: c.get("/readyz"))
        one = first.headers["x-quarry-worker"]
        second = _answered_by(server, lambda pid: pid != one, lambda c: c.get("/readyz"))
        workers = [one, second.headers["x-quarry-worker"]]

        submitted = []
        for i in range(4):
            worker = workers[i % 2]
            with _client_of(server, worker) as client:
                answer = client.post("/v1/training/jobs", json=_training_spec(f"m{i}"))
            assert answer.status_code == 202, answer.text
            assert answer.headers["x-quarry-worker"] == worker
            submitted.append(answer.json()["id"])
        done = [_finished(server, job_id) for job_id in submitted]

        assert [(job["status"], job["error"]) for job in done] == [("succeeded", None)] * 4
        scraped = _scrape_leaders(server, set(workers), time.monotonic() + 30)
        leaders = [w for w in workers if scraped[w].get("training.watchdog") == 1.0]
        assert len(leaders) == 1, scraped
        # every training process was started by the leading worker, whichever took the job
        assert {job["metrics"]["train_parent_pid"] for job in done} == {float(leaders[0])}
    finally:
        server.stop()
