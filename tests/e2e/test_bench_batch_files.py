"""``bench.batch_files --quick`` runs end to end and writes its results (timings are the
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
def test_quick_mode_scores_the_file_and_writes_results(tmp_path: Path) -> None:
    command = ["-m", "bench.batch_files", "--quick", "--output-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
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
