"""``bench.soak`` with two workers runs end to end for a few seconds and writes its results
(memory growth and timings are the benchmark's business, not asserted here)."""

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


@pytest.mark.timeout(180)
def test_a_short_soak_of_two_workers_samples_the_whole_process_tree(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        message = "wrk is not installed (run .ci/install-debian wrk wrk)"
        if IN_CI:
            pytest.fail(f"{message}; it is required when CI=true")
        pytest.skip(message)
    command = [sys.executable, "-m", "bench.soak", "--workers", "2", "--output-dir", str(tmp_path)]
    command += ["--warmup", "2", "--duration", "4", "--interval", "1", "--connections", "8"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "soak-2w.json").read_text())
    assert report["workers"] == 2
    assert report["processes"] >= 3  # the parent and its two workers
    assert report["load"]["requests"] > 0
    assert len(report["samples"]) >= 2
    assert all(sample[1] > 0 for sample in report["samples"])
    assert "QUARRY_WORKERS=2" in (tmp_path / "soak-2w.md").read_text()
