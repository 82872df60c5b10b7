"""Idempotency-Key: a retried POST replays the first answer instead of running twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar, Request, Response, post
from litestar.params import JSONBody
from litestar.testing import TestClient
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from app.kernel import context
from app.kernel.auth import KeyStore
from app.kernel.context import CallContext
from app.kernel.http.auth import AuthMiddleware, auth_guard
from app.kernel.http.errors import exception_handlers
from app.kernel.http.idempotency import IdempotencyMiddleware, IdempotencyStore, StoredResponse


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counters:
    """How often each handler really ran, and what it last saw."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.seen_key: str | None = None

    def bump(self, name: str) -> int:
        self.runs[name] = self.runs.get(name, 0) + 1
        return self.runs[name]


def make_app(counters: Counters, store: IdempotencyStore, keys: KeyStore) -> Litestar:
    @post("/items", opt={"scope": "ingest"}, sync_to_thread=False)
    def create_item(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        counters.seen_key = context.current().idempotency_key
        return {"item": data, "run": counters.bump("items")}

    @post("/flaky", opt={"scope": "ingest"}, sync_to_thread=False)
    def flaky(data: JSONBody[dict[str, Any]]) -> Response[dict[str, Any]]:
        run = counters.bump("flaky")
        return Response({"run": run}, status_code=503 if run == 1 else 201)

    @post("/refuse", opt={"scope": "ingest"}, sync_to_thread=False)
    def refuse(data: JSONBody[dict[str, Any]]) -> Response[dict[str, Any]]:
        return Response({"run": counters.bump("refuse")}, status_code=422)

    @post("/busy", opt={"scope": "ingest"}, sync_to_thread=False)
    def busy() -> Response[dict[str, Any]]:
        return Response({"run": counters.bump("busy")}, status_code=429)

    @post("/cancel", opt={"scope": "ingest"}, sync_to_thread=False)
    def cancel(request: Request[Any, Any, Any]) -> dict[str, Any]:  # never reads the body
        return {"run": counters.bump("cancel")}

    return Litestar(
        route_handlers=[create_item, flaky, refuse, busy, cancel],
        middleware=[AuthMiddleware(required=True, keys=keys), IdempotencyMiddleware(store)],
        guards=[auth_guard],
        exception_handlers=exception_handlers,
    )


@pytest.fixture
def counters() -> Counters:
    return Counters()


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "api_keys.toml")


@pytest.fixture
def key(keys: KeyStore) -> str:
    return keys.create("writer", ["ingest"])[1]


@pytest.fixture
def client(counters: Counters, keys: KeyStore) -> Iterator[TestClient[Litestar]]:
    with TestClient(make_app(counters, IdempotencyStore(), keys)) as test_client:
        yield test_client


def headers(key: str, idempotency_key: str | None = "op-1") -> dict[str, str]:
    out = {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        out["Idempotency-Key"] = idempotency_key
    return out


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code
    return dict(body)


# --- through litestar -------------------------------------------------------------------------


def test_a_repeat_replays_the_first_answer(
    client: TestClient[Litestar], counters: Counters, key: str
) -> None:
    first = client.post("/items", json={"n": 1}, headers=headers(key))
    again = client.post("/items", json={"n": 1}, headers=headers(key))

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() == {"item": {"n": 1}, "run": 1}
    assert counters.runs["items"] == 1
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]


def test_a_retried_upload_with_a_new_multipart_boundary_replays(
    client: TestClient[Litestar], counters: Counters, key: str
) -> None:
    def upload(boundary: str, payload: bytes) -> httpx.Response:
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m"\r\n\r\n'
            ).encode()
            + payload
            + f"\r\n--{boundary}--\r\n".encode()
        )
        content_type = f"multipart/form-data; boundary={boundary}"
        return client.post(
            "/cancel", content=body, headers={**headers(key), "Content-Type": content_type}
        )

    first = upload("a" * 30, b"model bytes" * 1000)
    retry = upload("b" * 24, b"model bytes" * 1000)
    other = upload("c" * 30, b"other bytes" * 1000)

    assert first.json() == retry.json() == {"run": 1}
    assert retry.headers["idempotent-replayed"] == "true"
    assert_error(other, 409, "conflict")


def test_the_key_is_in_the_call_context(
    client: TestClient[Litestar], counters: Counters, key: str
) -> None:
    client.post("/items", json={}, headers=headers(key, "op-ctx"))

    assert counters.seen_key == "op-ctx"


def test_the_same_key_with_a_different_body_is_409(
    client: TestClient[Litestar], counters: Counters, key: str
) -> None:
    client.post("/items", json={"n": 1}, headers=headers(key))

    response = client.post("/items", json={"n": 2}, headers=headers(key))

    body = assert_error(response, 409, "conflict")
    assert body["error"] == "Idempotency-Key reused with a different request"
    assert counters.runs["items"] == 1


def test_the_same_key_with_a_different_query_is_409(client: TestClient[Litestar], key: str) -> None:
    client.post("/items?x=1", json={"n": 1}, headers=headers(key))

    assert_error(client.post("/items?x=2", json={"n": 1}, headers=headers(key)), 409, "conflict")


def test_server_errors_are_not_kept_so_a_retry_can_succeed(
    client: TestClient[Litestar], counters: Counters, key: str
) -> None:
    assert client.post("/flaky", json={}, headers=headers(key)).status_code == 503

    retry = client.post("/flaky", json={}, headers=headers(key))
    replay = client.post("/flaky", json={}, headers=headers(key))

    assert retry.status_code == 201
    assert "idempotent-replayed" not in retry.headers
    assert replay.json() == {"run": 2}
    assert replay.headers["idempotent-replayed"] == "true"
    assert counters.runs["flaky"] == 2


def test_client_errors_are_kept_except_transient_ones(
    client: TestClient[Litestar], counters: Counters, key: str
) -> None:
    for _ in range(3):
        assert client.post("/refuse", json={}, headers=headers(key)).status_code == 422
        assert client.post("/busy", headers=headers(key)).status_code == 429

    assert counters.runs["refuse"] == 1
    assert counters.runs["busy"] == 3


def test_a_handler_that_never_reads_the_body_is_still_protected(
    client: TestClient[Litestar], counters: Counters, key: str
) -> None:
    first = client.post("/cancel", content=b"ignored", headers=headers(key))
    again = client.post("/cancel", content=b"ignored", headers=headers(key))
    other = client.post("/cancel", content=b"different", headers=headers(key))

    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert_error(other, 409, "conflict")
    assert counters.runs["cancel"] == 1


def test_requests_without_a_key_always_run(
    client: TestClient[Litestar], counters: Counters, key: str
) -> None:
    for _ in range(3):
        client.post("/items", json={"n": 1}, headers=headers(key, None))

    assert counters.runs["items"] == 3


def test_keys_are_separate_per_principal_and_path(
    client: TestClient[Litestar], counters: Counters, keys: KeyStore, key: str
) -> None:
    _, other_key = keys.create("other", ["ingest"])

    client.post("/items", json={"n": 1}, headers=headers(key))
    client.post("/items", json={"n": 1}, headers=headers(other_key))
    client.post("/refuse", json={"n": 1}, headers=headers(key))

    assert counters.runs["items"] == 2
    assert counters.runs["refuse"] == 1


def test_a_key_over_255_characters_is_400(client: TestClient[Litestar], key: str) -> None:
    response = client.post("/items", json={}, headers=headers(key, "k" * 256))

    body = assert_error(response, 400, "invalid_input")
    assert body["details"]["header"] == "Idempotency-Key"
    assert client.post("/items", json={}, headers=headers(key, "k" * 255)).status_code == 201


# --- at the ASGI level: streaming and concurrency --------------------------------------------


def http_scope(path: str = "/op", query: bytes = b"") -> Scope:
    raw = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "headers": [(b"idempotency-key", b"op-1")],
        "client": ("10.0.0.1", 1234),
    }
    return cast("Scope", raw)


def body_receive(*chunks: bytes) -> Receive:
    messages: list[ReceiveMessage] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> ReceiveMessage:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    return receive


class Answer:
    """Collects what the middleware sends."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])  # type: ignore[typeddict-item]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])  # type: ignore[typeddict-item]

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.messages[1:])  # type: ignore[typeddict-item]


class EchoApp:
    """Reads the whole body (recording each message), optionally waits, answers with the body."""

    def __init__(self, status: int = 201) -> None:
        self.status = status
        self.runs = 0
        self.received: list[tuple[bytes, bool]] = []
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.runs += 1
        body = b""
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            self.received.append((message["body"], message["more_body"]))
            body += message["body"]
            if not message["more_body"]:
                break
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def wrap(app: EchoApp, store: IdempotencyStore) -> ASGIApp:
    return IdempotencyMiddleware(store)(app)


async def test_the_body_streams_through_with_its_more_body_flags() -> None:
    app = EchoApp()
    middleware = wrap(app, IdempotencyStore())
    first, again = Answer(), Answer()

    await middleware(http_scope(), body_receive(b"ab", b"cd", b"ef"), first)
    await middleware(http_scope(), body_receive(b"abcde", b"f"), again)  # same bytes, other chunks

    assert app.received == [(b"ab", True), (b"cd", True), (b"ef", False)]
    assert first.body == again.body == b"abcdef"
    assert again.headers[b"idempotent-replayed"] == b"true"
    assert app.runs == 1


async def test_a_repeat_waits_for_the_first_instead_of_running_twice() -> None:
    app = EchoApp()
    app.gate = asyncio.Event()
    middleware = wrap(app, IdempotencyStore())
    first, second = Answer(), Answer()
    arrived = asyncio.Event()

    async def second_request() -> None:
        arrived.set()  # nothing awaits between here and the wait on the running first request
        await middleware(http_scope(), body_receive(b"payload"), second)

    async def first_request() -> None:
        await middleware(http_scope(), body_receive(b"payload"), first)

    first_task = asyncio.create_task(first_request())
    await app.entered.wait()
    second_task = asyncio.create_task(second_request())
    await arrived.wait()
    assert second.messages == []
    app.gate.set()
    await asyncio.gather(first_task, second_task)

    assert app.runs == 1
    assert first.status == second.status == 201
    assert second.body == b"payload"
    assert second.headers[b"idempotent-replayed"] == b"true"


async def test_a_waiting_repeat_runs_itself_when_the_first_fails() -> None:
    app = EchoApp(status=500)
    app.gate = asyncio.Event()
    middleware = wrap(app, IdempotencyStore())
    first, second = Answer(), Answer()
    arrived = asyncio.Event()

    async def second_request() -> None:
        arrived.set()
        await middleware(http_scope(), body_receive(b"payload"), second)

    async def first_request() -> None:
        await middleware(http_scope(), body_receive(b"payload"), first)

    first_task = asyncio.create_task(first_request())
    await app.entered.wait()
    second_task = asyncio.create_task(second_request())
    await arrived.wait()
    app.gate.set()
    await asyncio.gather(first_task, second_task)

    assert app.runs == 2
    assert first.status == second.status == 500
    assert b"idempotent-replayed" not in second.headers


async def test_a_repeat_stops_waiting_for_a_first_request_that_never_ends() -> None:
    app = EchoApp()
    app.gate = asyncio.Event()  # the first request is stuck (a client stalled mid-upload)
    middleware = IdempotencyMiddleware(IdempotencyStore(), max_wait_s=0.05)(app)
    first_task = asyncio.create_task(middleware(http_scope(), body_receive(b"p"), Answer()))
    await app.entered.wait()
    busy, late = Answer(), Answer()

    await asyncio.wait_for(middleware(http_scope(), body_receive(b"p"), busy), timeout=5)
    with context.use(CallContext().with_timeout(0.01)):
        await asyncio.wait_for(middleware(http_scope(), body_receive(b"p"), late), timeout=5)

    assert (busy.status, late.status) == (409, 504)
    assert busy.headers[b"retry-after"] == b"1"
    assert b"in progress" in busy.body
    assert b"deadline_exceeded" in late.body
    assert app.runs == 1
    app.gate.set()
    await first_task


async def test_a_client_that_disconnects_mid_body_leaves_nothing_stored() -> None:
    app = EchoApp()
    store = IdempotencyStore()

    async def receive() -> ReceiveMessage:
        return {"type": "http.disconnect"}

    async def app_reading_until_gone(scope: Scope, receive: Receive, send: Send) -> None:
        app.runs += 1
        await receive()
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    await IdempotencyMiddleware(store)(app_reading_until_gone)(http_scope(), receive, Answer())

    assert len(store) == 0


async def test_an_answer_too_big_to_keep_is_not_kept() -> None:
    app = EchoApp()
    middleware = wrap(app, IdempotencyStore(max_bytes=100))

    for _ in range(2):
        answer = Answer()
        await middleware(http_scope(), body_receive(b"x" * 500), answer)
        assert answer.body == b"x" * 500

    assert app.runs == 2


async def test_without_auth_middleware_keys_are_separate_per_client_address() -> None:
    app = EchoApp()
    middleware = wrap(app, IdempotencyStore())
    elsewhere = http_scope()
    elsewhere["client"] = ("10.9.9.9", 1)

    await middleware(http_scope(), body_receive(b"same"), Answer())
    await middleware(elsewhere, body_receive(b"same"), Answer())

    assert app.runs == 2


# --- the store --------------------------------------------------------------------------------


def kept(body: bytes = b"{}") -> StoredResponse:
    return StoredResponse(201, ((b"content-type", b"application/json"),), body)


def test_stored_answers_expire_after_the_ttl() -> None:
    clock = Clock()
    store = IdempotencyStore(ttl_s=60, clock=clock)
    key = ("anonymous", "op-1", "POST", "/items")
    store.finish(key, store.begin(key), b"hash", kept())

    clock.now += 59
    assert store.lookup(key) is not None
    clock.now += 2
    assert store.lookup(key) is None
    assert len(store) == 0


def test_the_store_keeps_at_most_max_entries_oldest_out_first() -> None:
    store = IdempotencyStore(max_entries=3)
    keys = [("anonymous", f"op-{i}", "POST", "/items") for i in range(5)]
    for key in keys:
        store.finish(key, store.begin(key), b"hash", kept())

    assert len(store) == 3
    assert store.lookup(keys[0]) is None
    assert store.lookup(keys[-1]) is not None


def test_the_store_keeps_at_most_max_bytes() -> None:
    store = IdempotencyStore(max_bytes=1000)
    keys = [("anonymous", f"op-{i}", "POST", "/items") for i in range(5)]
    for key in keys:
        store.finish(key, store.begin(key), b"hash", kept(b"x" * 300))
    too_big = ("anonymous", "big", "POST", "/items")
    store.finish(too_big, store.begin(too_big), b"hash", kept(b"x" * 2000))

    assert len(store) == 3
    assert store.lookup(too_big) is None
    assert store.lookup(keys[-1]) is not None
