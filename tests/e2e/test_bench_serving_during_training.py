"""``bench.serving_during_training --quick`` runs end to end and writes its results (timings are
the benchmark's business, not asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e._bench import run_quick

pytestmark = pytest.mark.slow
pytest.importorskip("torch")


@pytest.mark.timeout(300)
def test_quick_mode_measures_idle_and_training_and_writes_results(tmp_path: Path) -> None:
    run_quick("bench.serving_during_training", tmp_path)
    report = json.loads((tmp_path / "serving_during_training.json").read_text())
    assert [p["name"] for p in report["phases"]] == ["idle 1", "training 1", "idle after"]
    assert all(p["requests"] > 0 and p["errors"] == 0 for p in report["phases"])
    assert [job["status"] for job in report["jobs"]] == ["succeeded"]
    assert report["torch_in_server"] in (False, None)
    assert "p99 during training" in (tmp_path / "serving_during_training.md").read_text()
