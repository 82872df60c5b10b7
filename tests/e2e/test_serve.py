"""`quarry serve` as a user runs it: kernel routes, a real upload, and a kill mid-upload."""

from __future__ import annotations

import hashlib
import signal
import socket
import uuid
from pathlib import Path

import httpx

from tests.fakes.models import relu_model_bytes
from tests.fakes.server import Server


def test_kernel_routes_answer(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        every = ("registry", "features", "monitoring", "inference", "training", "notifications")
        assert client.get("/readyz").json()["modules"] == dict.fromkeys(every, True)
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "Quarry"
        modules = client.get("/v1/modules").json()["modules"]
        assert {"name": "registry", "placement": "local", "url": None}.items() <= modules[0].items()
        metrics = client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        missing = client.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found"


def test_register_alias_and_download_over_http(server: Server) -> None:
    data = relu_model_bytes()
    with httpx.Client(base_url=server.url) as client:
        created = client.post(
            "/v1/registry/models/churn/versions",
            files={"file": ("m.onnx", data, "application/octet-stream")},
            data={"metadata": '{"description": "e2e", "tags": {"team": "growth"}}'},
        )
        assert created.status_code == 201, created.text
        assert created.json()["sha256"] == hashlib.sha256(data).hexdigest()
        alias = client.put("/v1/registry/models/churn/aliases/champion", json={"version": 1})
        assert alias.status_code == 200, alias.text
        download = client.get("/v1/registry/models/churn/versions/1/artifact")
        assert download.content == data
        metrics = client.get("/metrics").text
    assert 'module="registry"' in metrics
    assert 'method="register_version"' in metrics


def _artifact_files(data_dir: Path) -> list[Path]:
    root = data_dir / "artifacts"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_killing_the_server_mid_upload_leaves_nothing_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Server(data_dir).start()
    model = relu_model_bytes() + b"\x00" * 4_000_000  # large enough to still be in flight
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + model + f"\r\n--{boundary}--\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", first.port)) as sock:
            sock.sendall(
                (
                    "POST /v1/registry/models/halfway/versions HTTP/1.1\r\nHost: x\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
            )
            sock.sendall(body[: len(body) // 2])
            first.kill()
    finally:
        first.stop()

    assert _artifact_files(data_dir) == []
    second = Server(data_dir).start()
    try:
        answer = httpx.get(f"{second.url}/v1/registry/models/halfway")
        assert answer.status_code == 404
        assert answer.json()["code"] == "not_found"
        listed = httpx.get(f"{second.url}/v1/registry/models").json()
        assert listed == {"items": [], "next_cursor": None}
    finally:
        second.stop()
    assert _artifact_files(data_dir) == []


def test_sigterm_fails_readiness_first_then_exits(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", args=("--drain-delay", "1.5")).start()
    assert server.process is not None
    with httpx.Client(base_url=server.url) as client:
        server.process.send_signal(signal.SIGTERM)
        draining = client.get("/readyz")
        assert draining.status_code == 503
        assert draining.json()["status"] == "draining"
        assert client.get("/healthz").status_code == 200  # still serving while draining
    # granian's server exits 0; uvicorn's (QUARRY_HTTP_SERVER=uvicorn) re-raises the signal
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
