"""``bench.predict_inprocess --quick`` runs end to end and writes its results (timings are the
benchmark's business, not asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e._bench import run_quick

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_predict_inprocess_quick_mode_times_both_sides_in_every_mode(tmp_path: Path) -> None:
    run_quick("bench.predict_inprocess", tmp_path)

    report = json.loads((tmp_path / "predict_inprocess.json").read_text())
    assert [row["mode"] for row in report["rows"]] == ["batching", "no-batching"]
    assert all(row["raw"]["calls"] > 0 and row["inprocess"]["calls"] > 0 for row in report["rows"])
    assert "added p50" in (tmp_path / "predict_inprocess.md").read_text()
