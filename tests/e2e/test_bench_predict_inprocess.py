"""``bench.predict_inprocess --quick`` runs end to end and writes its results (timings are the
benchmark's business, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_predict_inprocess_quick_mode_times_both_sides_in_every_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.predict_inprocess", "--quick", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads((tmp_path / "predict_inprocess.json").read_text())
    assert [row["mode"] for row in report["rows"]] == ["batching", "no-batching"]
    assert all(row["raw"]["calls"] > 0 and row["inprocess"]["calls"] > 0 for row in report["rows"])
    assert "added p50" in (tmp_path / "predict_inprocess.md").read_text()
