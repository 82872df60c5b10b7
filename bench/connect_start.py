"""How long ``app.connect()`` takes to start on a warm data directory, and what it logs.

Each sample is a fresh Python process (imports included, as a script or notebook pays them),
timed by the wall clock and by the CPU time it used (steadier on a busy machine):
``import app.bootstrap`` alone is **the baseline** (the import floor), then a process that enters
and leaves ``app.connect(data_dir=...)`` on a data directory already migrated by a first,
untimed start. ``--against DIR`` also measures another checkout (its ``app`` and ``contracts``
first on ``PYTHONPATH``), e.g. the previous commit from ``git worktree add``; samples alternate
between the trees, so load on the machine hits both alike.

    .venv/bin/python -m bench.connect_start [--runs 5] [--against /tmp/quarry-before]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
IMPORT_ONLY = "import app.bootstrap"
CONNECT = (
    "import asyncio, sys, app\n"
    "async def main():\n"
    "    async with app.connect(data_dir=sys.argv[1]):\n"
    "        pass\n"
    "asyncio.run(main())\n"
)


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _sample(code: str, data_dir: Path, tree: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and stderr lines of one process running ``code``."""
    env = {k: v for k, v in os.environ.items() if k != "QUARRY_LOG_LEVEL"}
    env["PYTHONPATH"] = str(tree)
    started, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=data_dir.parent,  # not the repository root, whose `app` would win over PYTHONPATH
        check=True,
    )
    return time.perf_counter() - started, _cpu() - cpu, len(done.stderr.splitlines())


def measure(trees: dict[str, Path], runs: int) -> dict[str, dict[str, float]]:
    """Per tree: median wall and CPU seconds of the import floor and of a warm ``connect``, and
    the lines logged by the first (migrating) and a warm start."""
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    lines: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {name: Path(tmp) / str(i) / "q" for i, name in enumerate(trees)}
        for name, tree in trees.items():
            dirs[name].parent.mkdir()
            lines[name] = [_sample(CONNECT, dirs[name], tree)[2]]
        for _ in range(runs):
            for name, tree in trees.items():
                for label, code in (("import", IMPORT_ONLY), ("connect", CONNECT)):
                    wall, cpu, logged = _sample(code, dirs[name], tree)
                    samples[name].setdefault(f"{label}_s", []).append(wall)
                    samples[name].setdefault(f"{label}_cpu_s", []).append(cpu)
                lines[name].append(logged)
    return {
        name: {
            **{key: round(statistics.median(values), 3) for key, values in found.items()},
            "log_lines_first_start": lines[name][0],
            "log_lines_warm_start": lines[name][-1],
        }
        for name, found in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout to measure too")
    args = parser.parse_args()
    trees = {"this tree": Path(__file__).resolve().parents[1]}
    if args.against:
        trees[str(args.against)] = args.against.resolve()
    results = measure(trees, args.runs)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "connect_start.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        "| tree | import app.bootstrap (baseline): wall / CPU | app.connect warm start: wall / CPU"
        " | lines logged (first / warm start) |",
        "|---|---|---|---|",
    ]
    rows += [
        f"| {name} | {r['import_s']:.2f} s / {r['import_cpu_s']:.2f} s"
        f" | {r['connect_s']:.2f} s / {r['connect_cpu_s']:.2f} s"
        f" | {r['log_lines_first_start']:.0f} / {r['log_lines_warm_start']:.0f} |"
        for name, r in results.items()
    ]
    text = "\n".join(["# app.connect() start-up", "", *rows, ""])
    (RESULTS / "connect_start.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
