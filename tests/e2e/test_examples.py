"""The scripts in `examples/` run as documented: in-process, with a user trainer, remotely."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.server import Server

pytestmark = pytest.mark.slow
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "examples-service-token"


def example(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/<args>`` from the repository root, as the README says."""
    return subprocess.run(  # noqa: PLW1510 - the exit status is asserted
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QUARRY_LOG_LEVEL": "WARNING"},
    )


def test_in_process_example_trains_serves_and_detects_drift(tmp_path: Path) -> None:
    done = example("examples/in_process.py", "--data-dir", str(tmp_path / "data"))

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "trained purchase:1 with logistic_regression: accuracy" in done.stdout
    assert "deployment purchase-live -> purchase:1" in done.stdout
    assert "drift check: drift, drifted: " in done.stdout
    assert "summary: 501 requests, error rate 0.0%" in done.stdout
    assert (tmp_path / "data" / "artifacts").is_dir()


def test_custom_trainer_example_registers_a_version_with_its_metrics(tmp_path: Path) -> None:
    done = example("examples/custom_trainer.py", "--data-dir", str(tmp_path / "data"))

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ridge_regression on 500 generated houses" in done.stdout
    assert "registered house_price:1: mae " in done.stdout
    assert " r2 0.9" in done.stdout


def test_remote_example_runs_the_flow_against_a_server_with_the_plugin(tmp_path: Path) -> None:
    env = {
        "QUARRY_SERVICE_TOKEN": TOKEN,
        "QUARRY_PREDICTION_LOG_SAMPLE": "1.0",
        "QUARRY_TRAINERS": "examples.custom_trainer",
        "PYTHONPATH": str(ROOT),
    }
    server = Server(tmp_path / "data", env=env).start()
    try:
        done = example("examples/remote.py", "--url", server.url, "--api-key", TOKEN)
    finally:
        server.stop()

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"connected to {server.url}" in done.stdout
    assert "ridge_regression" in done.stdout  # the server imported the plug-in by name
    assert "trained purchase:1 with logistic_regression" in done.stdout
    assert "drift check: drift" in done.stdout
