"""Running a benchmark's quick mode from an end-to-end test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_quick(module: str, output_dir: Path, *args: str, timeout: float = 280) -> None:
    """``python -m <module> --quick --output-dir <output_dir> <args>`` from the repository's
    root; the test fails with the end of its stderr when it exits with an error."""
    command = [sys.executable, "-m", module, "--quick", "--output-dir", str(output_dir), *args]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
