"""``bench.materialize --quick`` runs end to end, checks what the stores answer against its
in-memory reference, and writes its results (timings are the benchmark's business, not asserted
here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_quick_mode_materializes_checks_the_stores_and_writes_results(tmp_path: Path) -> None:
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
    assert report["setup"]["tied_rows"] > 0  # ties exist for the checks to break
    checks = {check["check"]: check for check in report["checks"]}
    online = checks["online: latest row per entity"]
    historical = checks["historical: point-in-time rows"]
    assert (online["stores"], online["rows"], online["mismatches"]) == (
        "embedded (SQLite)",
        2_000,
        0,
    )
    assert (historical["rows"], historical["mismatches"]) == (2_000, 0)
    assert all(count > 0 for count in historical["details"].values()), historical["details"]
    assert len(historical["details"]) == 4
    text = (tmp_path / "materialize.md").read_text()
    assert "| materialize |" in text
    assert "| online: latest row per entity | embedded (SQLite) | 2,000 | 0 |" in text
