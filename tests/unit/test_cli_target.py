"""--url / --api-key are global options, and QUARRY_URL / QUARRY_API_KEY stand in for them."""

from __future__ import annotations

import pytest

from app.cli.parser import build_parser
from app.cli.reach import resolve_target


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://q:8000", "train", "job.json"],
        ["train", "job.json", "--url", "http://q:8000"],
        ["rollouts", "list", "--url", "http://q:8000"],
        ["models", "list", "--url", "http://q:8000", "--json"],
        ["--url", "http://q:8000", "jobs", "cancel", "j1"],
    ],
)
def test_url_is_accepted_before_or_after_any_command(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QUARRY_URL", raising=False)
    monkeypatch.setenv("QUARRY_API_KEY", "from-env")
    args = build_parser().parse_args(argv)
    resolve_target(args)
    assert args.url == "http://q:8000"
    assert args.api_key == "from-env"


def test_the_environment_names_the_server_and_a_flag_beats_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUARRY_URL", "http://env:8000")
    monkeypatch.setenv("QUARRY_API_KEY", "env-key")
    from_env = build_parser().parse_args(["jobs", "list"])
    resolve_target(from_env)
    flagged = build_parser().parse_args(["jobs", "list", "--url", "http://flag", "--api-key", "k"])
    resolve_target(flagged)

    assert (from_env.url, from_env.api_key) == ("http://env:8000", "env-key")
    assert (flagged.url, flagged.api_key) == ("http://flag", "k")


def test_without_url_commands_run_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUARRY_URL", raising=False)
    monkeypatch.delenv("QUARRY_API_KEY", raising=False)
    args = build_parser().parse_args(["models", "list"])
    resolve_target(args)
    assert args.url is None
    assert args.api_key is None
