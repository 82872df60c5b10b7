"""A gateway (``QUARRY_MODULES=none``): a process hosting no module that serves the remote ones.

It answers every public route of a module it reaches through the module's contract, the probes,
``/v1/modules``, ``/metrics`` and the console; a route of a module it does not reach answers 503
``unavailable`` naming the module; its ``/readyz`` fails while a remote module does not answer.
A placement whose module graph cannot be satisfied is refused before any work.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.bootstrap import Platform
from app.kernel.settings import ConfigError, Settings, load_settings
from tests.fakes.models import relu_model_bytes
from tests.fakes.server import QUARRY
from tests.integration.test_tracing import Served, serve

TOKEN = "gateway-test-token"


def test_none_hosts_no_module_and_stands_alone() -> None:
    assert load_settings({"QUARRY_MODULES": "none"}).modules == ()
    assert load_settings({"QUARRY_MODULES": " None "}).modules == ()
    assert load_settings({}, modules="none").modules == ()  # quarry serve --modules none
    with pytest.raises(ConfigError, match="QUARRY_MODULES='none,registry' is not valid"):
        load_settings({"QUARRY_MODULES": "none,registry"})
    with pytest.raises(ConfigError, match="expected 'all', 'none' or a comma-separated list"):
        load_settings({"QUARRY_MODULES": ","})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            Settings(modules=("inference",)),
            "module inference requires registry, which is neither hosted here (QUARRY_MODULES)"
            " nor remote (set QUARRY_REMOTE_REGISTRY)",
        ),
        (
            Settings(
                modules=("training",), remotes={"features": "http://f:1"}, service_token=TOKEN
            ),
            "module training requires registry, which is neither hosted here",
        ),
        (
            Settings(modules=()),
            "QUARRY_MODULES='none' hosts no module and no QUARRY_REMOTE_<MODULE> is set",
        ),
    ],
)
def test_a_placement_the_module_graph_cannot_satisfy_is_refused_naming_it(
    tmp_path: Path, settings: Settings, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Platform(settings.replace(data_dir=tmp_path))
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before any work


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(
        data_dir=tmp_path / "registry",
        modules=("registry",),
        service_token=TOKEN,
        log_level="WARNING",
    )
    served = serve("registry", settings)
    yield served
    served.stop()


@pytest.fixture
def gateway(tmp_path: Path, registry: Served) -> Iterator[Served]:
    settings = Settings(
        data_dir=tmp_path / "gateway",
        modules=(),
        remotes={"registry": registry.url},
        service_token=TOKEN,
        log_level="WARNING",
    )
    served = serve("gateway", settings)
    yield served
    served.stop()


def test_a_gateway_serves_a_remote_module_and_answers_503_for_one_it_does_not_reach(
    tmp_path: Path, registry: Served, gateway: Served
) -> None:
    data = relu_model_bytes()
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        created = http.post(
            "/v1/registry/models/churn/versions",
            files={"file": ("m.onnx", data, "application/octet-stream")},
        )
        assert created.status_code == 201, created.text
        assert http.get("/v1/registry/models/churn/versions/1/artifact").content == data
        assert not (tmp_path / "gateway" / "artifacts").exists()  # the registry holds the bytes

        for method, path, module in [
            ("GET", "/v1/features/views", "features"),
            ("POST", "/v1/predict/churn", "inference"),
            ("GET", "/v1/training/jobs", "training"),
            ("GET", "/v1/monitoring/models/churn/summary", "monitoring"),
            ("GET", "/v1/notifications/webhooks", "notifications"),
        ]:
            answer = http.request(
                method, path, json={"inputs": {"x": [[1.0]]}} if method == "POST" else None
            )
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["code"] == "unavailable"
            assert f"module {module} is neither hosted here nor remote" in answer.json()["error"]
            assert f"QUARRY_REMOTE_{module.upper()}" in answer.json()["error"]

        modules = http.get("/v1/modules").json()
        assert [(m["name"], m["placement"], m["url"]) for m in modules["modules"]] == [
            ("registry", "remote", registry.url)
        ]
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["modules"] == {}
        assert ready.json()["dependencies"]["registry.remote"] is True
        assert "quarry_dependency_up" in http.get("/metrics").text
        assert http.get("/ui").status_code == 200
        assert http.get("/healthz").status_code == 200

        registry.stop()
        deadline = time.monotonic() + 30
        while (ready := http.get("/readyz")).status_code == 200:  # checked every few seconds
            assert time.monotonic() < deadline, "the gateway stayed ready without its registry"
            time.sleep(0.1)  # polling the background check, with a deadline
        assert ready.status_code == 503
        assert ready.json()["unavailable"] == ["registry.remote"]


def test_a_module_process_answers_503_for_a_module_it_does_not_reach(registry: Served) -> None:
    with httpx.Client(base_url=registry.url, timeout=30) as http:
        answer = http.get("/v1/training/jobs")
        assert answer.status_code == 503, answer.text
        assert "module training is neither hosted here nor remote" in answer.json()["error"]
        assert http.get("/readyz").status_code == 200  # its own module is what readiness covers


def test_quarry_serve_refuses_an_unsatisfiable_placement_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARRY_")}
    done = subprocess.run(
        [str(QUARRY), "--data-dir", str(tmp_path / "d"), "serve", "--modules", "training"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "QUARRY_REMOTE_FEATURES": "http://127.0.0.1:9", "QUARRY_SERVICE_TOKEN": "t"},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "quarry: configuration error: module training requires registry, which is neither hosted"
        " here (QUARRY_MODULES) nor remote (set QUARRY_REMOTE_REGISTRY)"
    ]
    assert not (tmp_path / "d").exists()  # refused before any work
