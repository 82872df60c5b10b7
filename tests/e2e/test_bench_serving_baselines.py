"""``bench.serving_baselines --quick`` and ``bench.rpc_overhead --quick`` run end to end and write
their results (timings are the benchmarks' business, not asserted here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _bench(module: str, out: Path, timeout: float) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--output-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.timeout(300)
def test_serving_baselines_quick_mode_measures_every_server_under_every_load(
    tmp_path: Path,
) -> None:
    pytest.importorskip("fastapi")
    if shutil.which("wrk") is None:
        message = "wrk is not installed (run .ci/install-debian wrk wrk)"
        if IN_CI:
            pytest.fail(f"{message}; it is required when CI=true")
        pytest.skip(message)
    _bench("bench.serving_baselines", tmp_path, 280)

    report = json.loads((tmp_path / "serving_baselines.json").read_text())
    measured = {(r["server"], r["rows_per_request"]) for r in report["runs"]}
    from bench.serving_baselines import SERVERS

    servers = set(SERVERS)
    assert {
        "quarry-1w",
        "quarry-2w",
        "quarry-1w-uvicorn",
        "quarry-1w-runner",
        "fastapi-async",
    } <= servers
    assert measured == {(s, rows) for s in servers for rows in (1, 64)}
    assert all(r["load"]["requests"] > 0 and r["load"]["non_2xx"] == 0 for r in report["runs"])
    two = next(
        f for f in report["figures"] if (f["server"], f["rows_per_request"]) == ("quarry-2w", 1)
    )
    assert len(two["vs_one_worker"]) == len(two["vs_fastapi"]) == report["rounds"] == 1
    assert "req/s vs FastAPI" in (tmp_path / "serving_baselines.md").read_text()


@pytest.mark.timeout(180)
def test_rpc_overhead_quick_mode_starts_its_server_and_writes_results(tmp_path: Path) -> None:
    _bench("bench.rpc_overhead", tmp_path, 160)

    assert json.loads((tmp_path / "rpc_overhead.json").read_text())["rows"]
