"""``bench.batch_files --quick`` runs end to end and writes its results (timings are the
benchmark's business, not asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e._bench import run_quick

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_quick_mode_scores_the_file_and_writes_results(tmp_path: Path) -> None:
    run_quick("bench.batch_files", tmp_path)
    report = json.loads((tmp_path / "batch_files.json").read_text())
    assert [row["method"] for row in report["rows"]] == [
        "pyarrow + ONNX Runtime + pyarrow (floor)",
        "batch job: Parquet file -> Parquet file",
        "batch job: inline tensors -> fetched results (baseline)",
    ]
    assert {row["rows"] for row in report["rows"]} == {20_000}
    assert (
        "| batch job: Parquet file -> Parquet file |" in (tmp_path / "batch_files.md").read_text()
    )
