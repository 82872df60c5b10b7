"""Fatal errors are one readable line: a busy port, an unreachable Redis or PostgreSQL, a bad
setting. The line names the address (never its password) and the setting or flag to change; the
exit status says which kind of failure it was; a traceback appears only with ``--debug``.
Scope names read as users write them (``read``), never as an enum's repr."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.bootstrap import Platform, create_app
from app.cli import main
from app.cli.fatal import EXIT_CONFIG, EXIT_FAILURE, EXIT_UNAVAILABLE, explain
from app.kernel.auth import KeyStore
from app.kernel.rpc import RemoteModule
from app.kernel.settings import ConfigError, Settings
from contracts.common import PermissionDenied, Unavailable
from contracts.registry import VERSION, GetModel, RegistryService
from tests.fakes.server import QUARRY, free_port

SECRET = "hunter2"
REMOTE = {"module": "registry", "url": "http://r:8001"}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def quarry(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real `quarry` command, in its own data directory."""
    return subprocess.run(
        [str(QUARRY), "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "QUARRY_LOG_LEVEL": "WARNING", **env},
        check=False,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The command failed with a short stderr, no traceback, naming each of ``expected``."""
    err = done.stderr
    assert done.returncode != 0, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3, err
    for text in expected:
        assert text in err, err
    assert SECRET not in err
    return err


# --- the real command ------------------------------------------------------------------------


def test_a_busy_port_is_one_line_before_any_work(tmp_path: Path, busy_port: int) -> None:
    done = quarry(tmp_path, "serve", "--port", str(busy_port))

    err = assert_one_line(done, f"127.0.0.1:{busy_port}", "address already in use", "--port")
    assert "QUARRY_PORT" in err
    assert done.returncode == EXIT_UNAVAILABLE
    assert not (tmp_path / "data").exists()  # nothing was migrated or created


def test_an_unreachable_redis_names_its_address_and_setting(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"

    done = quarry(tmp_path, "serve", "--port", str(free_port()), QUARRY_BROKER_URL=url)

    assert_one_line(
        done, f"cannot reach Redis at redis://127.0.0.1:{port}/0", "QUARRY_BROKER_URL", "refused"
    )
    assert done.returncode == EXIT_UNAVAILABLE


def test_an_unreachable_postgresql_names_its_address_and_setting(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://quarry:{SECRET}@127.0.0.1:{port}/quarry"

    done = quarry(tmp_path, "migrate", QUARRY_REGISTRY_DATABASE_URL=url)

    assert_one_line(
        done,
        f"cannot reach PostgreSQL at postgresql://quarry@127.0.0.1:{port}/quarry",
        "QUARRY_REGISTRY_DATABASE_URL",
    )
    assert done.returncode == EXIT_UNAVAILABLE


def test_a_bad_setting_names_the_variable(tmp_path: Path) -> None:
    done = quarry(tmp_path, "serve", QUARRY_PORT="eighty")

    assert_one_line(done, "QUARRY_PORT", "eighty")
    assert done.returncode == EXIT_CONFIG


def test_debug_shows_the_traceback_given_after_the_command(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    done = quarry(tmp_path, "worker", "--debug", QUARRY_BROKER_URL=url)

    assert done.returncode == EXIT_UNAVAILABLE
    assert "Traceback" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("quarry: cannot reach Redis")


# --- every command, in-process ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["worker"], "QUARRY_BROKER_URL"),
        (["events", "failed"], "QUARRY_REGISTRY_DATABASE_URL"),
        (["train", "--job", "j1"], "QUARRY_EVENTS_URL"),
        (["rollouts", "list"], "QUARRY_LOCKS_URL"),
    ],
)
def test_every_command_reports_an_unreachable_server_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    setting: str,
) -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    urls = {
        "QUARRY_BROKER_URL": redis_url,
        "QUARRY_EVENTS_URL": redis_url,
        "QUARRY_LOCKS_URL": redis_url,
        "QUARRY_REGISTRY_DATABASE_URL": f"postgresql://q:{SECRET}@127.0.0.1:{free_port()}/q",
    }
    monkeypatch.setenv(setting, urls[setting])

    status = main(["--data-dir", str(tmp_path), *args])

    err = capsys.readouterr().err
    assert status == EXIT_UNAVAILABLE, err
    assert err.count("\n") == 1
    assert err.startswith("quarry: cannot reach ")
    assert setting in err
    assert SECRET not in err


def test_a_missing_onnxruntime_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if neither extra were installed
    monkeypatch.setenv("QUARRY_LOG_LEVEL", "WARNING")  # migrations log at INFO

    status = main(["--data-dir", str(tmp_path), "rollouts", "list"])

    err = capsys.readouterr().err
    assert status == EXIT_CONFIG
    assert err.count("\n") == 1
    assert "ONNX Runtime cannot be imported" in err
    assert "quarryml[cpu]" in err


def test_quickstart_on_a_busy_port_stops_before_any_stage(
    tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["quickstart", "--port", str(busy_port), "--data-dir", str(tmp_path)])

    captured = capsys.readouterr()
    assert status == EXIT_UNAVAILABLE
    assert captured.err == (
        f"quarry: cannot listen on 127.0.0.1:{busy_port}: address already in use"
        " (change --port or QUARRY_PORT)\n"
    )
    assert "[stage]" not in captured.out
    assert list(tmp_path.iterdir()) == []


def _raised(exc: BaseException, cause: BaseException) -> BaseException:
    try:
        raise exc from cause
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    ("failure", "line", "status"),
    [
        (
            ExceptionGroup("lifespan", [_raised(RuntimeError("startup"), ConfigError("QUARRY_X"))]),
            "configuration error: QUARRY_X",
            EXIT_CONFIG,
        ),
        (
            _raised(RuntimeError("wrapped"), OSError(28, "No space left on device")),
            "OSError: [Errno 28] No space left on device (--debug shows the traceback)",
            EXIT_FAILURE,
        ),
        (
            Unavailable("module registry at http://r:8001 is unreachable", details=REMOTE),
            "unavailable: module registry at http://r:8001 is unreachable (QUARRY_REMOTE_REGISTRY)",
            EXIT_UNAVAILABLE,
        ),
    ],
)
def test_wrapped_failures_are_told_by_their_cause(
    failure: BaseException, line: str, status: int
) -> None:
    settings = Settings(remotes={"registry": "http://r:8001"})

    assert explain(failure, settings) == (line, status)


# --- scope names -----------------------------------------------------------------------------


async def test_the_rpc_refusal_names_the_scope_as_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, service_token="rpc-token")
    async with Platform(settings) as platform:
        app: Any = create_app(platform, host="127.0.0.1")
        _, predictor = KeyStore(settings.keys_file).create("predictor", ["predict"])
        remote = RemoteModule(
            "registry",
            "http://quarry",
            RegistryService,
            VERSION,
            token=predictor,
            transport=httpx.ASGITransport(app=app),
        )
        try:
            with pytest.raises(PermissionDenied) as refused:
                await remote.proxy().get_model(GetModel(name="churn"))
        finally:
            await remote.aclose()

    assert refused.value.message == "this operation needs an API key with scope 'read'"
    assert refused.value.details["needed_scope"] == "read"


def test_keys_print_scope_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--scopes", "train,read", "--data-dir", str(tmp_path)]) == 0
    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    assert "with scopes read, train" in out
    assert " read,train " in out
    assert "Scope" not in out
