"""`quarry quickstart`: every stage of the loop on embedded defaults, in a fresh data directory."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.server import QUARRY, free_port

pytestmark = pytest.mark.slow
pytest.importorskip("torch")

STAGES = [
    "ingest",
    "train",
    "register",
    "deploy",
    "traffic",
    "shift",
    "drift",
    "retrain",
    "rollout",
]


def test_quickstart_runs_every_stage_and_exits_zero(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            str(QUARRY),
            "--data-dir",
            str(tmp_path),
            "quickstart",
            "--no-serve",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "QUARRY_LOG_LEVEL": "WARNING"},
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stages = re.findall(r"^\[stage\] (\w+)$", done.stdout, flags=re.MULTILINE)
    assert stages == STAGES
    assert "drifted: " in done.stdout
    assert "promoted at 100%" in done.stdout
    assert next(p.name for p in tmp_path.iterdir()).startswith("quickstart-")


def test_quickstart_then_serves_the_commands_it_prints(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "quickstart.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(QUARRY), "--data-dir", str(tmp_path / "data"), "quickstart", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "QUARRY_LOG_LEVEL": "WARNING"},
        )
    try:
        deadline = time.monotonic() + 600
        while "[stage] serve" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)  # polling another process's output, with a deadline
        while "the web console: " not in log.read_text():  # the banner's last line
            time.sleep(0.05)
        printed = [
            line.strip()[2:]
            for line in log.read_text().splitlines()
            if line.strip().startswith("$ ")
        ]
        curls = [shlex.split(command) for command in printed if command.startswith("curl")]
        assert len(curls) == 4
        for argv in curls[:3]:  # predict by entity, OIP v2 infer, the monitoring summary
            url = next(a for a in argv if a.startswith("http"))
            body = argv[argv.index("-d") + 1] if "-d" in argv else None
            with httpx.Client(timeout=30) as client:
                answer = (
                    client.post(url, content=body, headers={"content-type": "application/json"})
                    if body
                    else client.get(url)
                )
            assert answer.status_code == 200, (url, answer.text)
        report = re.search(r"drift report: (\S+)", log.read_text())
        assert report is not None
        page = httpx.get(report.group(1), timeout=30)
        assert page.status_code == 200
        assert "<svg" in page.text
        console = re.search(r"the web console: (\S+)", log.read_text())
        assert console is not None
        overview = httpx.get(console.group(1), timeout=30)
        assert overview.status_code == 200
        assert "churn-live" in overview.text
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
