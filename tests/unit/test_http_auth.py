"""HTTP auth: 401 without a valid key, 403 without the route's scope, open paths, /rpc, 429."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get, post
from litestar.testing import TestClient

from app.kernel import context
from app.kernel.auth import KeyStore
from app.kernel.http.auth import (
    AuthMiddleware,
    auth_guard,
    auth_middleware,
    default_open_paths,
    required_scope,
)
from app.kernel.http.errors import exception_handlers
from app.kernel.http.ratelimit import RateLimiter
from app.kernel.settings import Settings
from contracts.common import InternalError

SERVICE_TOKEN = "service-token-for-tests"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _who(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {"principal": request.user.key_id, "context": context.current().principal}


@get("/things", sync_to_thread=False)
def list_things(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _who(request)


@post("/things", sync_to_thread=False)
def create_thing(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _who(request)


@post("/predict", opt={"scope": "predict"}, sync_to_thread=False)
def predict(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _who(request)


@get(["/healthz", "/readyz", "/v2/health/live", "/metrics"], sync_to_thread=False)
def probe(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _who(request)


@post("/rpc/{module:str}/{method:str}", opt={"scope": None}, sync_to_thread=False)
def rpc(request: Request[Any, Any, Any]) -> dict[str, Any]:
    params = request.path_params
    return {**_who(request), "call": f"{params['module']}.{params['method']}"}


def make_app(middleware: AuthMiddleware) -> Litestar:
    return Litestar(
        route_handlers=[list_things, create_thing, predict, probe, rpc],
        middleware=[middleware],
        guards=[auth_guard],
        exception_handlers=exception_handlers,
    )


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "api_keys.toml")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def client_for(
    keys: KeyStore,
    *,
    required: bool = True,
    limiter: RateLimiter | None = None,
    settings: Settings | None = None,
) -> TestClient[Litestar]:
    middleware = AuthMiddleware(
        required=required,
        keys=keys,
        service_token=SERVICE_TOKEN,
        open_paths=default_open_paths(settings or Settings()),
        limiter=limiter,
    )
    return TestClient(make_app(middleware))


@pytest.fixture
def client(keys: KeyStore) -> Iterator[TestClient[Litestar]]:
    with client_for(keys) as test_client:
        yield test_client


@pytest.fixture
def open_client(keys: KeyStore) -> Iterator[TestClient[Litestar]]:
    with client_for(keys, required=False) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["details"], dict)
    return dict(body)


# --- 401 --------------------------------------------------------------------------------------


def test_no_key_is_401_with_a_bearer_challenge(client: TestClient[Litestar]) -> None:
    response = client.get("/things")

    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_invalid_key_is_401(client: TestClient[Litestar], keys: KeyStore) -> None:
    info, secret = keys.create("ci", ["read"])

    assert_error(client.get("/things", headers=bearer("qk_nope")), 401, "unauthenticated")
    assert_error(client.get("/things", headers=bearer(secret + "x")), 401, "unauthenticated")
    keys.revoke(info.id)
    response = client.get("/things", headers=bearer(secret))
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_valid_key_acts_as_its_principal(client: TestClient[Litestar], keys: KeyStore) -> None:
    info, secret = keys.create("ci", ["read"])

    response = client.get("/things", headers=bearer(secret))

    assert response.status_code == 200
    assert response.json() == {"principal": info.id, "context": info.id}


def test_the_x_api_key_header_works_too(client: TestClient[Litestar], keys: KeyStore) -> None:
    info, secret = keys.create("ci", ["read"])

    response = client.get("/things", headers={"X-API-Key": secret})

    assert response.status_code == 200
    assert response.json()["principal"] == info.id


def test_other_authorization_schemes_do_not_count_as_a_key(client: TestClient[Litestar]) -> None:
    response = client.get("/things", headers={"Authorization": "Basic dXNlcjpwdw=="})

    assert_error(response, 401, "unauthenticated")


# --- 403 --------------------------------------------------------------------------------------


def test_a_key_without_the_route_scope_is_403_naming_it(
    client: TestClient[Litestar], keys: KeyStore
) -> None:
    _, reader = keys.create("reader", ["read"])

    body = assert_error(client.post("/predict", headers=bearer(reader)), 403, "permission_denied")

    assert body["details"]["needed_scope"] == "predict"
    assert "predict" in body["error"]


def test_routes_without_a_scope_need_read_for_get_and_admin_otherwise(
    client: TestClient[Litestar], keys: KeyStore
) -> None:
    _, predictor = keys.create("predictor", ["predict"])
    _, reader = keys.create("reader", ["read"])

    assert client.get("/things", headers=bearer(reader)).status_code == 200
    assert client.post("/predict", headers=bearer(predictor)).status_code == 201
    body = assert_error(client.get("/things", headers=bearer(predictor)), 403, "permission_denied")
    assert body["details"]["needed_scope"] == "read"
    body = assert_error(client.post("/things", headers=bearer(reader)), 403, "permission_denied")
    assert body["details"]["needed_scope"] == "admin"


def test_admin_covers_every_scope(client: TestClient[Litestar], keys: KeyStore) -> None:
    _, admin = keys.create("root", ["admin"])

    assert client.get("/things", headers=bearer(admin)).status_code == 200
    assert client.post("/things", headers=bearer(admin)).status_code == 201
    assert client.post("/predict", headers=bearer(admin)).status_code == 201


def test_an_unknown_route_scope_is_a_server_error() -> None:
    @get("/typo", opt={"scope": "reed"}, sync_to_thread=False)
    def typo() -> None:
        return None

    with pytest.raises(InternalError, match="reed"):
        required_scope(typo, "GET")


def test_the_guard_without_the_middleware_fails_closed() -> None:
    app = Litestar(
        route_handlers=[list_things], guards=[auth_guard], exception_handlers=exception_handlers
    )
    with TestClient(app) as plain:
        assert_error(plain.get("/things"), 401, "unauthenticated")


# --- auth off, open paths, /rpc, service token -----------------------------------------------


def test_without_required_auth_requests_act_as_anonymous(open_client: TestClient[Litestar]) -> None:
    assert open_client.get("/things").json() == {"principal": "anonymous", "context": "anonymous"}
    assert open_client.post("/things").status_code == 201


def test_without_required_auth_an_invalid_key_is_still_401(
    open_client: TestClient[Litestar],
) -> None:
    assert_error(open_client.get("/things", headers=bearer("qk_bad")), 401, "unauthenticated")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v2/health/live", "/metrics"])
def test_probes_and_metrics_are_open(client: TestClient[Litestar], path: str) -> None:
    response = client.get(path, headers=bearer("qk_ignored_on_open_paths"))

    assert response.status_code == 200
    assert response.json()["principal"] == "anonymous"


def test_the_openapi_schema_is_open(client: TestClient[Litestar]) -> None:
    assert client.get("/schema/openapi.json").status_code == 200


def test_probes_and_metrics_can_be_closed(keys: KeyStore) -> None:
    closed = Settings(open_probes=False, metrics_auth="on")
    with client_for(keys, settings=closed) as closed_client:
        for path in ("/healthz", "/readyz", "/v2/health/live", "/metrics"):
            assert_error(closed_client.get(path), 401, "unauthenticated")


def test_rpc_needs_a_key_even_when_auth_is_off(open_client: TestClient[Litestar]) -> None:
    response = open_client.post("/rpc/registry/get_model")

    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


def test_rpc_accepts_the_service_token_and_api_keys(
    open_client: TestClient[Litestar], keys: KeyStore
) -> None:
    info, secret = keys.create("remote-client", ["read"])

    service = open_client.post("/rpc/registry/get_model", headers=bearer(SERVICE_TOKEN))
    with_key = open_client.post("/rpc/registry/get_model", headers=bearer(secret))

    assert service.status_code == 201
    assert service.json() == {
        "principal": "service",
        "context": "service",
        "call": "registry.get_model",
    }
    assert with_key.status_code == 201
    assert with_key.json()["principal"] == info.id


def test_the_service_token_holds_every_scope(client: TestClient[Litestar]) -> None:
    assert client.post("/things", headers=bearer(SERVICE_TOKEN)).json()["principal"] == "service"
    assert client.post("/predict", headers={"X-API-Key": SERVICE_TOKEN}).status_code == 201
    assert_error(client.get("/things", headers=bearer(SERVICE_TOKEN + "x")), 401, "unauthenticated")


def test_auth_middleware_follows_the_settings(keys: KeyStore) -> None:
    settings = Settings(auth="auto", service_token=SERVICE_TOKEN, rate_limit_per_s=0)

    on_loopback = auth_middleware(settings, keys, host="127.0.0.1")
    public = auth_middleware(settings, keys, host="0.0.0.0")

    assert not on_loopback.required
    assert public.required
    assert public.limiter is None  # rate 0 disables limiting
    with TestClient(make_app(public)) as public_client:
        assert_error(public_client.get("/things"), 401, "unauthenticated")
        assert public_client.get("/things", headers=bearer(SERVICE_TOKEN)).status_code == 200


# --- rate limiting ----------------------------------------------------------------------------


def test_a_key_over_its_burst_gets_429_with_retry_after(keys: KeyStore, clock: Clock) -> None:
    _, first = keys.create("first", ["read"])
    _, second = keys.create("second", ["read"])
    limiter = RateLimiter(0.5, 2, clock=clock)

    with client_for(keys, limiter=limiter) as limited:
        assert limited.get("/things", headers=bearer(first)).status_code == 200
        assert limited.get("/things", headers=bearer(first)).status_code == 200
        response = limited.get("/things", headers=bearer(first))
        body = assert_error(response, 429, "rate_limited")
        assert response.headers["retry-after"] == "2"
        assert body["details"]["retry_after"] == pytest.approx(2.0)

        assert limited.get("/things", headers=bearer(second)).status_code == 200  # its own bucket
        clock.now += 2.0
        assert limited.get("/things", headers=bearer(first)).status_code == 200


def test_anonymous_requests_are_limited_by_client_address(keys: KeyStore, clock: Clock) -> None:
    limiter = RateLimiter(1, 1, clock=clock)

    with client_for(keys, required=False, limiter=limiter) as limited:
        assert limited.get("/things").status_code == 200
        response = limited.get("/things")
        assert_error(response, 429, "rate_limited")
        assert response.headers["retry-after"] == "1"
        assert limiter.acquire("ip:testclient") > 0


def test_open_paths_and_the_service_token_are_not_limited(keys: KeyStore, clock: Clock) -> None:
    limiter = RateLimiter(1, 1, clock=clock)

    with client_for(keys, limiter=limiter) as limited:
        for _ in range(5):
            assert limited.get("/healthz").status_code == 200
            assert limited.get("/things", headers=bearer(SERVICE_TOKEN)).status_code == 200
    assert len(limiter) == 0


def test_the_limiter_refills_at_its_rate(clock: Clock) -> None:
    limiter = RateLimiter(10, 3, clock=clock)

    assert [limiter.acquire("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k") == pytest.approx(0.1)
    clock.now += 0.25  # 2.5 tokens back; the refused try above took none
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") == 0.0
    assert limiter.acquire("k") > 0
    clock.now += 3600  # never more than the burst
    assert [limiter.acquire("k") for _ in range(4)][-1] > 0


def test_the_limiter_keeps_a_bounded_number_of_buckets(clock: Clock) -> None:
    limiter = RateLimiter(1, 1, max_keys=3, clock=clock)

    for i in range(10):
        limiter.acquire(f"k{i}")

    assert len(limiter) == 3


def test_a_zero_rate_disables_the_limiter(clock: Clock) -> None:
    limiter = RateLimiter(0, 1, clock=clock)

    assert not limiter.enabled
    assert all(limiter.acquire("k") == 0.0 for _ in range(100))
    assert len(limiter) == 0
