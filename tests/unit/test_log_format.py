"""QUARRY_LOG_FORMAT=auto: console lines for a person at a terminal, JSON for everything else."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.kernel import telemetry
from app.kernel.settings import load_settings


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_through(stream: io.StringIO, monkeypatch: pytest.MonkeyPatch, fmt: str) -> str:
    monkeypatch.setattr("sys.stderr", stream)
    telemetry.configure(log_level="INFO", log_format=fmt)
    logging.getLogger("quarry.test").info("hello", extra={"answer": 42})
    return stream.getvalue().strip()


def test_auto_is_the_default() -> None:
    assert load_settings({}).log_format == "auto"
    assert load_settings({"QUARRY_LOG_FORMAT": "json"}).log_format == "json"


@pytest.mark.usefixtures("restore_logging")
def test_auto_writes_json_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _log_through(io.StringIO(), monkeypatch, "auto")

    record = json.loads(line)
    assert record["event"] == "hello"
    assert record["answer"] == 42


@pytest.mark.usefixtures("restore_logging")
def test_auto_writes_readable_lines_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _log_through(_Terminal(), monkeypatch, "auto")

    assert not line.startswith("{")
    assert "hello" in line
    assert "answer=42" in line
