"""The auth middleware checks the route's scope itself: no guard is needed, and the platform's app
runs none (litestar copies the route handler for every guard call). Keys found valid once are
remembered until the keys file changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, Request, get, post
from litestar.testing import TestClient

from app.kernel.auth import KeyStore
from app.kernel.http.app import create_http_app
from app.kernel.http.auth import AuthMiddleware, auth_guard
from app.kernel.http.errors import exception_handlers
from app.kernel.settings import Settings
from tests.fakes.platform import BarePlatform


@get("/things", sync_to_thread=False)
def list_things(request: Request[Any, Any, Any]) -> str:
    return str(request.user.key_id)


@post("/things", sync_to_thread=False)
def create_thing() -> str:
    return "created"


@post("/predict", opt={"scope": "predict"}, sync_to_thread=False)
def predict() -> str:
    return "predicted"


@post("/rpc/{module:str}/{method:str}", opt={"scope": None}, sync_to_thread=False)
def rpc(request: Request[Any, Any, Any]) -> str:
    return "{module}.{method}".format(**request.path_params)


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "api_keys.toml")


@pytest.fixture
def client(keys: KeyStore) -> Iterator[TestClient[Litestar]]:
    app = Litestar(
        route_handlers=[list_things, create_thing, predict, rpc],
        middleware=[AuthMiddleware(required=True, keys=keys)],
        exception_handlers=exception_handlers,
    )
    with TestClient(app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_middleware_alone_refuses_routes_beyond_a_keys_scopes(
    client: TestClient[Litestar], keys: KeyStore
) -> None:
    _, reader = keys.create("reader", ["read"])
    _, predictor = keys.create("predictor", ["predict"])

    assert client.get("/things", headers=bearer(reader)).status_code == 200
    refused = client.post("/things", headers=bearer(reader))
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"
    assert refused.json()["details"]["needed_scope"] == "admin"
    assert client.post("/predict", headers=bearer(reader)).status_code == 403
    assert client.post("/predict", headers=bearer(predictor)).text == "predicted"
    assert client.get("/things", headers=bearer(predictor)).status_code == 403
    # a route that checks scopes itself is left to do so
    assert client.post("/rpc/registry/list_models", headers=bearer(predictor)).status_code == 201


def test_a_revoked_key_is_refused_although_it_was_remembered(
    client: TestClient[Litestar], keys: KeyStore
) -> None:
    info, reader = keys.create("reader", ["read"])
    assert client.get("/things", headers=bearer(reader)).text == info.id

    keys.revoke(info.id)

    refused = client.get("/things", headers=bearer(reader))
    assert refused.status_code == 401


def test_another_process_revoking_a_key_is_seen_at_the_next_look_at_the_file(
    tmp_path: Path,
) -> None:
    now = [100.0]
    serving = KeyStore(tmp_path / "keys.toml", clock=lambda: now[0], recheck_s=1.0)
    admin = KeyStore(tmp_path / "keys.toml")
    info, key = admin.create("reader", ["read"])
    assert serving.verify(key) is not None
    assert serving.verify(key) is not None  # remembered

    admin.revoke(info.id)
    now[0] += 1.0

    assert serving.verify(key) is None
    assert serving.verify(key[:-1] + ("x" if key[-1] != "x" else "y")) is None


def test_the_platform_app_runs_no_guard_next_to_the_middleware(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    middleware = AuthMiddleware(required=True, keys=KeyStore(settings.keys_file))

    app = create_http_app(
        settings=settings,
        platform=BarePlatform(),
        route_handlers=[list_things],
        middleware=[middleware],
        guards=[auth_guard],
    )
    alone = create_http_app(
        settings=settings,
        platform=BarePlatform(),
        route_handlers=[list_things],
        guards=[auth_guard],
    )

    assert auth_guard not in app.guards
    assert auth_guard in alone.guards  # without the middleware, the guard is the check
