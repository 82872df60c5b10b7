"""`quarry train SPEC.json` runs a job in-process and shows its progress until it ends."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fakes.server import QUARRY

pytestmark = pytest.mark.slow
pytest.importorskip("torch")


def test_quarry_train_follows_a_job_to_its_end(tmp_path: Path) -> None:
    rows = [{"a": float(i), "y": int(i % 2)} for i in range(40)]
    spec = {
        "trainer": "logistic_regression",
        "model": "parity",
        "dataset": {"rows": rows, "features": ["a"], "label": "y"},
        "hyperparameters": {"epochs": 3},
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))

    done = subprocess.run(  # noqa: PLW1510 - the exit status is asserted
        [str(QUARRY), "--data-dir", str(tmp_path / "data"), "train", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"QUARRY_LOG_LEVEL": "WARNING", "PATH": "/usr/bin:/bin"},
    )

    assert done.returncode == 0, done.stderr
    assert "[train]" in done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded"
    assert job["version"] == 1

    bad = subprocess.run(  # noqa: PLW1510 - the exit status is asserted
        [str(QUARRY), "--data-dir", str(tmp_path / "data"), "train", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "nope.json" in bad.stderr
