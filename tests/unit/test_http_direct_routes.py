"""Direct routes answer as litestar would: the same middleware (key, scope, rate limit,
idempotency), the same body limit and the same error answers. Each request is sent to a direct
route and to its twin served by litestar's router, and the two answers compared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from litestar import Litestar, Request, post
from litestar.params import PathParameter
from litestar.testing import TestClient

from app.kernel import context
from app.kernel.auth import KeyStore
from app.kernel.http.app import create_http_app
from app.kernel.http.auth import AuthMiddleware
from app.kernel.http.idempotency import IdempotencyMiddleware
from app.kernel.http.ratelimit import RateLimiter
from app.kernel.settings import Settings
from contracts.common import InvalidInput, Unavailable
from tests.fakes.platform import BarePlatform

LIMIT = 1_000
Name = Annotated[str, PathParameter()]
calls: list[str] = []


async def work(scope: Any, name: str, body: bytes) -> tuple[bytes, str]:
    calls.append(name)
    if name == "invalid":
        raise InvalidInput("bad rows", details={"row": 3})
    if name == "busy":
        raise Unavailable("try later", retry_after=2.0)
    if name == "boom":
        raise RuntimeError("a bug")
    kind = next((v for k, v in scope["headers"] if k == b"content-type"), b"").decode()
    answer = {"name": name, "size": len(body), "kind": kind, "key": context.current().principal}
    return msgspec.json.encode(answer), "application/json"


@post("/direct/{name:str}", opt={"scope": "predict", "direct": work}, status_code=200)
async def direct(name: Name, request: Request[Any, Any, Any]) -> bytes:
    raise AssertionError("the direct handler answers this route")


@post("/plain/{name:str}", opt={"scope": "predict"}, status_code=200, media_type="application/json")
async def plain(name: Name, request: Request[Any, Any, Any]) -> bytes:
    content, _ = await work(request.scope, name, await request.body())
    return content


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "api_keys.toml")


@pytest.fixture
def client(tmp_path: Path, keys: KeyStore) -> Iterator[TestClient[Litestar]]:
    calls.clear()
    app = create_http_app(
        settings=Settings(data_dir=tmp_path, max_body_bytes=LIMIT),
        platform=BarePlatform(),
        route_handlers=[direct, plain],
        middleware=[
            AuthMiddleware(required=True, keys=keys, limiter=RateLimiter(0.001, 10)),
            IdempotencyMiddleware(),
        ],
    )
    with TestClient(app) as test_client:
        yield test_client


def both(client: TestClient[Litestar], name: str, **kwargs: Any) -> tuple[Any, Any]:
    return client.post(f"/direct/{name}", **kwargs), client.post(f"/plain/{name}", **kwargs)


def same(direct: Any, plain: Any) -> None:
    assert direct.status_code == plain.status_code
    assert direct.content.replace(b"/direct/", b"/plain/") == plain.content
    kept = {"content-type", "retry-after", "www-authenticate"}  # the lengths differ by the path
    assert {k: v for k, v in direct.headers.items() if k in kept} == {
        k: v for k, v in plain.headers.items() if k in kept
    }


def test_answers_and_errors_match_litestars(client: TestClient[Litestar], keys: KeyStore) -> None:
    info, key = keys.create("predictor", ["predict"])
    auth = {"Authorization": f"Bearer {key}"}

    answered = both(client, "ok", content=b"[1, 2]", headers=auth | {"Content-Type": "x/y"})
    same(*answered)
    assert answered[0].json() == {"name": "ok", "size": 6, "kind": "x/y", "key": info.id}
    for name, status in (("invalid", 400), ("busy", 503), ("boom", 500)):
        direct_answer, plain_answer = both(client, name, content=b"{}", headers=auth)
        same(direct_answer, plain_answer)
        assert direct_answer.status_code == status
    assert calls == ["ok", "ok", "invalid", "invalid", "busy", "busy", "boom", "boom"]


def test_keys_scopes_and_the_rate_limit_are_checked(
    client: TestClient[Litestar], keys: KeyStore
) -> None:
    _, reader = keys.create("reader", ["read"])
    _, key = keys.create("predictor", ["predict"])

    missing = both(client, "ok", content=b"{}")
    same(*missing)
    assert missing[0].status_code == 401
    refused = both(client, "ok", content=b"{}", headers={"Authorization": f"Bearer {reader}"})
    same(*refused)
    assert refused[0].status_code == 403
    assert refused[0].json()["details"]["needed_scope"] == "predict"
    limited = [
        client.post(f"/{kind}/ok", headers={"X-API-Key": key}).status_code
        for kind in ("direct", "plain") * 6
    ]
    assert limited == [200] * 10 + [429] * 2  # one bucket of 10 for both routes
    assert calls == ["ok"] * 10


def test_oversize_bodies_are_413_and_never_reach_the_handler(
    client: TestClient[Litestar], keys: KeyStore
) -> None:
    _, key = keys.create("predictor", ["predict"])
    auth = {"Authorization": f"Bearer {key}"}

    declared = both(client, "ok", content=b"x" * (LIMIT + 1), headers=auth)
    same(*declared)
    assert declared[0].status_code == 413

    def chunks() -> Iterator[bytes]:
        yield from [b"x" * 600, b"x" * 600]

    streamed = client.post("/direct/ok", content=chunks(), headers=auth)
    assert streamed.status_code == 413
    assert streamed.json()["code"] == declared[0].json()["code"]
    assert both(client, "ok", content=b"x" * LIMIT, headers=auth)[0].status_code == 200
    assert calls == ["ok", "ok"]


def test_an_idempotency_key_replays_the_first_answer(
    client: TestClient[Litestar], keys: KeyStore
) -> None:
    _, key = keys.create("predictor", ["predict"])
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "once"}

    first = client.post("/direct/ok", content=b"abc", headers=headers)
    again = client.post("/direct/ok", content=b"abc", headers=headers)

    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers.get("idempotent-replayed") == "true"
    assert calls == ["ok"]


def test_paths_the_direct_route_does_not_match_go_to_the_router(
    client: TestClient[Litestar], keys: KeyStore
) -> None:
    _, key = keys.create("predictor", ["predict"])
    auth = {"Authorization": f"Bearer {key}"}

    assert client.post("/direct/a/b", headers=auth).status_code == 404
    assert client.get("/direct/ok", headers=auth).status_code == 405
    assert client.post("/direct/", headers=auth).status_code in (404, 405)
    assert calls == []
