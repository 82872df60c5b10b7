"""`quarry models|deployments|jobs|features`: tables for people, JSON for programs, in-process or
against the server named by QUARRY_URL / QUARRY_API_KEY."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import app
from app.cli import main
from app.kernel.auth import KeyStore
from contracts.inference import Deployment, PutDeployment, Route
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx
from tests.fakes.server import Server


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("QUARRY_URL", "QUARRY_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with app.connect_sync(data_dir=tmp_path / "q") as q:
        for _ in range(2):
            q.registry.register_version(RegisterVersion(name="fraud", artifact=linear_onnx()))
    return tmp_path / "q"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def test_models_list_is_a_table_and_json_on_request(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, table, _ = _run(capsys, "models", "list", "--data-dir", str(data_dir))
    assert status == 0
    header, row = table.splitlines()
    assert header.split() == ["NAME", "LATEST", "VERSIONS", "ALIASES", "UPDATED"]
    assert row.split()[:3] == ["fraud", "2", "2"]

    status, text, _ = _run(capsys, "--data-dir", str(data_dir), "models", "list", "--json")
    assert status == 0
    assert [m["name"] for m in json.loads(text)["items"]] == ["fraud"]


def test_models_alias_archive_and_show(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(data_dir)]
    assert _run(capsys, *d, "models", "alias", "fraud", "champion", "2")[1] == (
        "fraud@champion -> version 2\n"
    )
    assert _run(capsys, *d, "models", "archive", "fraud", "1")[1] == "fraud:1 is archived\n"

    status, text, _ = _run(capsys, *d, "models", "show", "fraud", "--json")
    shown = json.loads(text)
    assert status == 0
    assert shown["model"]["aliases"] == {"champion": 2}
    assert [(v["version"], v["status"]) for v in shown["versions"]] == [
        (2, "ready"),
        (1, "archived"),
    ]
    table = _run(capsys, *d, "models", "show", "fraud")[1]
    assert "aliases:     champion=2" in table
    assert any(line.split()[:3] == ["1", "archived", "-"] for line in table.splitlines())


def test_deployments_list_and_show(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    routes = [Route(model="fraud:1", weight=0.9), Route(model="fraud:2", weight=0.1)]
    with app.connect_sync(data_dir=data_dir) as q:
        q.inference.put_deployment(PutDeployment(deployment=Deployment(name="web", routes=routes)))
    d = ["--data-dir", str(data_dir)]

    listed = _run(capsys, *d, "deployments", "list")[1].splitlines()
    assert listed[0].split() == ["NAME", "ROUTES", "SHADOWS", "UPDATED"]
    assert listed[1].startswith("web ")
    assert "fraud:1 0.9, fraud:2 0.1" in listed[1]
    shown = json.loads(_run(capsys, *d, "deployments", "show", "web", "--json")[1])
    assert [r["model"] for r in shown["routes"]] == ["fraud:1", "fraud:2"]
    assert "deployment:" in _run(capsys, *d, "deployments", "show", "web")[1]


def test_empty_lists_say_so(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(data_dir)]
    assert _run(capsys, *d, "jobs", "list")[1] == "no training jobs\n"
    assert _run(capsys, *d, "features", "views")[1] == "no feature views\n"
    assert json.loads(_run(capsys, *d, "features", "services", "--json")[1])["items"] == []


def test_a_missing_thing_is_one_line_and_status_1(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, "--data-dir", str(data_dir), "jobs", "show", "nope")
    assert status == 1
    assert out == ""
    assert err.startswith("quarry: not_found:")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(tmp_path_factory.mktemp("client-commands") / "data").start()
    yield started
    started.stop()


@pytest.mark.slow
def test_quarry_url_and_api_key_reach_the_running_server(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, secret = KeyStore(server.data_dir / "api_keys.toml").create("cli", ["read", "admin"])
    monkeypatch.setenv("QUARRY_URL", server.url)
    monkeypatch.delenv("QUARRY_API_KEY", raising=False)

    status, _, err = _run(capsys, "models", "list")
    assert status == 2
    assert "set QUARRY_API_KEY or --api-key" in err
    assert "quarry keys create" in err

    monkeypatch.setenv("QUARRY_API_KEY", secret)
    assert _run(capsys, "models", "list")[1] == "no models\n"  # the server's, not ./.quarry's
    status, text, _ = _run(capsys, "deployments", "list", "--json")
    assert (status, json.loads(text)["items"]) == (0, [])
