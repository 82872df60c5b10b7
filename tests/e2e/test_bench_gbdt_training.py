"""``bench.gbdt_training --quick`` runs end to end and writes its results (timings are the
benchmark's business, not asserted here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e._bench import run_quick

pytestmark = pytest.mark.slow
pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("sklearn")


@pytest.mark.timeout(420)
def test_quick_mode_trains_every_tree_trainer_and_writes_results(tmp_path: Path) -> None:
    run_quick("bench.gbdt_training", tmp_path, timeout=400)
    report = json.loads((tmp_path / "gbdt_training.json").read_text())
    assert [t["status"] for t in report["training"]] == ["succeeded"] * 6
    if shutil.which("wrk") is not None:
        served = {s["model"] for s in report["serving"]}
        assert served == {"xgboost-classifier", "lightgbm-regressor", "mlp"}
    assert "library directly" in (tmp_path / "gbdt_training.md").read_text()
