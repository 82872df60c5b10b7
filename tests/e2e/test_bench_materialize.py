"""``bench.materialize --quick`` runs end to end, checks what the stores answer against its
in-memory reference, and writes its results (timings are the benchmark's business, not asserted
here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e._bench import run_quick

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_quick_mode_materializes_checks_the_stores_and_writes_results(tmp_path: Path) -> None:
    run_quick("bench.materialize", tmp_path, "--postgres-url", "")
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
