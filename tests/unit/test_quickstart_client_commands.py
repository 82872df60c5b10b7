"""The quickstart tells how to reach the demo it serves: a key command that works, and the URL."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from app.cli import main
from app.cli.quickstart import client_commands
from app.kernel.auth import KeyStore


def test_the_printed_key_command_creates_a_key_in_the_demo_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "quickstart dir"  # a space: the printed path is quoted
    create, export, listing = client_commands("http://127.0.0.1:8000", data_dir)

    argv = shlex.split(create)
    assert argv[0] == "quarry"
    assert main(argv[1:]) == 0

    secret = capsys.readouterr().out.strip().splitlines()[-1]
    keys = KeyStore(data_dir / "api_keys.toml")
    assert [k.name for k in keys.list()] == ["quickstart"]
    assert keys.verify(secret) is not None
    assert "QUARRY_URL=http://127.0.0.1:8000" in export
    assert "QUARRY_API_KEY=" in export
    assert listing == "quarry models list"
