"""`quarry serve --workers 2` on embedded defaults: two processes answer on one port, share
their data, and stop together on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.fakes.models import relu_model_bytes
from tests.fakes.server import Server

pytestmark = pytest.mark.slow

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


def _each_loop_led_once(server: Server, workers: set[str]) -> bool:
    """Every singleton loop is led by exactly one worker (each takes its lease, none assumes
    it is alone), as the two workers' ``/metrics`` say."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scraped: dict[str, dict[str, float]] = {}
        while set(scraped) != workers and time.monotonic() < deadline:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                answer = client.get("/metrics")
            scraped[answer.headers["x-quarry-worker"]] = _leaders(answer.text)
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
