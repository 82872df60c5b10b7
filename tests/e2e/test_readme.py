"""The README's quick start runs as written, against a fresh ``quarry serve`` on embedded defaults.

Every ```sh block of the "Quick start" section carries a marker on the line before it:
``<!-- docs-test -->`` (run here) or ``<!-- docs-test: skip REASON -->`` (it needs what a test
cannot have: it installs and starts Quarry itself, a GPU, Kubernetes, S3 ...). The marked blocks
run in order in one bash process, as a reader pastes them into one shell, with ``localhost:8000``
pointed at the test's server. Every ``curl`` fails on an HTTP error status unless the block
handles errors itself (``-f``), so a refused request fails its block.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.server import Server

pytestmark = pytest.mark.slow
pytest.importorskip("torch")  # the walkthrough trains a model

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Quick start"
MARKER = re.compile(r"<!-- docs-test(?::\s*skip\s*(?P<reason>[^>]*?))?\s*-->")
BEGIN = "@@docs-test block {}@@"

# curl fails on HTTP errors (keeping the answer's body) unless the block asked for -f itself
PRELUDE = """\
set -eo pipefail
curl() {
  local arg
  for arg in "$@"; do
    if [[ $arg == --fail* || $arg == -[!-]*f* ]]; then command curl "$@"; return; fi
  done
  command curl --fail-with-body "$@"
}
"""


def section(text: str, heading: str) -> str:
    """The lines of ``heading``'s section, up to the next heading of the same level."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + len(heading) + 2)
    return text[start : end if end != -1 else len(text)]


def sh_blocks(text: str) -> list[tuple[str | None, str]]:
    """Each ```sh block with the marker on the line before it: (None or the skip reason, code).

    A block without a marker is an error: a new block must say whether the docs test runs it.
    """
    blocks: list[tuple[str | None, str]] = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip() != "```sh":
            continue
        end = lines.index("```", i + 1)
        marker = MARKER.fullmatch(lines[i - 1].strip()) if i else None
        if marker is None:
            raise AssertionError(
                f"README block {lines[i + 1]!r} has no <!-- docs-test --> or"
                " <!-- docs-test: skip REASON --> marker on the line before it"
            )
        blocks.append((marker["reason"], "\n".join(lines[i + 1 : end])))
    return blocks


def script(blocks: list[str], base_url: str) -> str:
    """One bash script that runs ``blocks`` in order, announcing each one on stdout."""
    parts = [PRELUDE]
    for n, code in enumerate(blocks):
        parts.append(f"echo '{BEGIN.format(n)}'")
        parts.append(
            code.replace("http://localhost:8000", base_url).replace(
                "localhost:8000", base_url.removeprefix("http://")
            )
        )
    parts.append(f"echo '{BEGIN.format(len(blocks))}'")
    return "\n".join(parts) + "\n"


def outputs(stdout: str, count: int) -> list[str]:
    """What each block printed, by the announcements :func:`script` adds."""
    found = []
    for n in range(count):
        start = stdout.index(BEGIN.format(n)) + len(BEGIN.format(n))
        found.append(stdout[start : stdout.index(BEGIN.format(n + 1))])
    return found


def test_every_quick_start_block_is_marked_and_some_run() -> None:
    blocks = sh_blocks(section(README.read_text(), SECTION))

    skipped = [reason for reason, _ in blocks if reason is not None]
    assert all(skipped), "a skipped block says why"
    assert len(blocks) - len(skipped) >= 3


@pytest.mark.timeout(180)  # a server, a training job and some 220 requests: about a minute
def test_quick_start_walkthrough_runs_against_a_fresh_server(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the README's commands need curl")
    runnable = [
        code for reason, code in sh_blocks(section(README.read_text(), SECTION)) if not reason
    ]
    work = tmp_path / "work"
    work.mkdir()
    server = Server(tmp_path / "data").start()
    try:
        done = subprocess.run(  # noqa: PLW1510 - the exit status is asserted
            ["bash", "-c", script(runnable, server.url)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=150,
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            },
        )
    finally:
        server.stop()

    ran = [n for n in range(len(runnable) + 1) if BEGIN.format(n) in done.stdout]
    failed = ran[-1] if ran else 0
    assert done.returncode == 0, (
        f"README quick start block {failed} failed (exit {done.returncode}):\n"
        f"{runnable[failed] if failed < len(runnable) else ''}\n--- stdout\n"
        f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}\n--- server log\n"
        f"{server.log.read_text()[-3000:]}"
    )
    registry, features, job_file, trained = outputs(done.stdout, len(runnable))

    assert "wrote model.onnx: input x float32 [batch, 3]" in registry
    assert '"name":"fraud","alias":"champion","version":1' in registry
    assert (work / "fraud.onnx").read_bytes() == (work / "model.onnx").read_bytes()
    assert '{"outputs":{"score":[[' in registry
    assert '"view":"users","version":1,"rows":400' in features
    assert '"statuses":["PRESENT","PRESENT","PRESENT"]' in features
    assert job_file == "\n"
    assert '"passed": true' in trained
    assert '{"outputs":{"probabilities":[[' in trained
    assert '"model":"retention","version":1,"label":1' in trained
    assert re.search(r'"status":"(ok|drift)","dataset_drift"', trained)  # enough rows to judge
    assert (work / "drift.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert '{"name":"retention","alias":"champion","version":1}' in trained
