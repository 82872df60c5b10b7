"""``bench.materialize --quick`` runs end to end and writes its results (timings are the
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
def test_quick_mode_materializes_and_writes_results(tmp_path: Path) -> None:
    command = ["-m", "bench.materialize", "--quick", "--output-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, *command, "--postgres-url", ""],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "materialize.json").read_text())
    methods = [(row["method"], row["stores"]) for row in report["rows"]]
    assert methods[:2] == [
        ("pyarrow reads the file (floor)", "-"),
        ("materialize", "embedded (SQLite)"),
    ]
    assert report["rows"][1]["rows"] == 20_000
    assert "| materialize |" in (tmp_path / "materialize.md").read_text()
