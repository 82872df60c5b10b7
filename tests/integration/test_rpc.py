"""The RPC transport's edges: auth, versions, limits, a remote that is down, slow or garbled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from app.bootstrap import Platform, create_app
from app.kernel import context
from app.kernel.auth import KeyStore
from app.kernel.context import CallContext
from app.kernel.rpc import CircuitBreaker, RemoteModule
from app.kernel.rpc.frames import ITEM, frame
from app.kernel.settings import Settings
from contracts.common import (
    ContractVersionMismatch,
    DeadlineExceeded,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from contracts.registry import (
    VERSION,
    FetchArtifact,
    GetModel,
    ListModels,
    RegisterVersion,
    RegistryService,
    VersionInfo,
)
from tests.fakes.models import linear_onnx
from tests.fakes.platform import BarePlatform

TOKEN = "rpc-test-token"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, KeyStore]]:
    """The real app, reached in-process through httpx's ASGI transport."""
    settings = Settings(data_dir=tmp_path, service_token=TOKEN, max_rpc_body_bytes=64 * 1024)
    async with Platform(settings) as platform:
        yield create_app(platform, host="127.0.0.1"), KeyStore(settings.keys_file)


def remote(app: Any, token: str | None, version: tuple[int, int] = VERSION) -> Any:
    module = RemoteModule(
        "registry",
        "http://quarry",
        RegistryService,
        version,
        token=token,
        transport=httpx.ASGITransport(app=app),
    )
    return module.proxy()


async def test_the_service_token_reaches_every_method(served: tuple[Any, KeyStore]) -> None:
    registry = remote(served[0], TOKEN)
    info = await registry.register_version(RegisterVersion(name="m", artifact=linear_onnx()))
    assert isinstance(info, VersionInfo)
    chunks = [c async for c in registry.fetch_artifact(FetchArtifact(ref="m:1", chunk_size=64))]
    assert b"".join(c.data for c in chunks) == linear_onnx()


async def test_missing_and_wrong_tokens_are_refused(served: tuple[Any, KeyStore]) -> None:
    for token in (None, "wrong"):
        with pytest.raises(Unauthenticated):
            await remote(served[0], token).list_models(ListModels())


async def test_api_keys_reach_only_what_their_scopes_cover(served: tuple[Any, KeyStore]) -> None:
    app, keys = served
    _, reader = keys.create("reader", ["read"])
    registry = remote(app, reader)

    page = await registry.list_models(ListModels())
    with pytest.raises(PermissionDenied, match="train"):
        await registry.register_version(RegisterVersion(name="m", artifact=linear_onnx()))
    assert page.items == []


async def test_a_major_version_mismatch_is_refused(served: tuple[Any, KeyStore]) -> None:
    with pytest.raises(ContractVersionMismatch):
        await remote(served[0], TOKEN, (VERSION[0] + 1, 0)).list_models(ListModels())
    assert (await remote(served[0], TOKEN, (VERSION[0], 99)).list_models(ListModels())).items == []


async def test_oversize_bodies_and_unknown_methods_are_typed_errors(
    served: tuple[Any, KeyStore],
) -> None:
    registry = remote(served[0], TOKEN)
    with pytest.raises(PayloadTooLarge):
        await registry.register_version(RegisterVersion(name="m", artifact=b"x" * 100_000))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served[0])) as http:
        answer = await http.post(
            "http://quarry/rpc/registry/drop_everything",
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        garbage = await http.post(
            "http://quarry/rpc/registry/get_model",
            content=b"\xc1\xc1not msgpack",
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 404
    assert msgspec.msgpack.decode(answer.content)["code"] == NotFound.code
    assert garbage.status_code == 400
    assert msgspec.msgpack.decode(garbage.content)["code"] == "invalid_input"


def _mock(handler: Any, *, breaker: CircuitBreaker | None = None) -> tuple[Any, RemoteModule]:
    module = RemoteModule(
        "registry",
        "http://remote",
        RegistryService,
        VERSION,
        token=TOKEN,
        transport=httpx.MockTransport(handler),
        breaker=breaker,
        backoff_s=0.001,
    )
    return module.proxy(), module


async def test_a_down_remote_is_unavailable_and_opens_the_breaker() -> None:
    attempts = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("connection refused", request=request)

    registry, module = _mock(refuse)
    with pytest.raises(Unavailable, match="unreachable"):
        await registry.get_model(GetModel(name="m"))  # idempotent: tried three times
    assert (attempts, module.breaker.state) == (3, "closed")
    with pytest.raises(Unavailable):
        await registry.get_model(GetModel(name="m"))  # the fifth failure opens the breaker
    assert (attempts, module.breaker.state) == (5, "open")
    with pytest.raises(Unavailable, match="circuit breaker open"):
        await registry.get_model(GetModel(name="m"))
    assert attempts == 5  # refused without leaving the process


async def test_non_idempotent_methods_are_not_retried() -> None:
    attempts = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("refused", request=request)

    registry, _ = _mock(refuse)
    with pytest.raises(Unavailable):
        await registry.register_version(RegisterVersion(name="m", artifact=b""))
    assert attempts == 1


async def test_a_transient_failure_is_retried_for_idempotent_methods() -> None:
    answers = iter([None, None])

    def flaky(request: httpx.Request) -> httpx.Response:
        if next(answers, "ok") is None:
            raise httpx.ReadError("reset", request=request)
        body = msgspec.msgpack.encode({"items": [], "next_cursor": None})
        return httpx.Response(200, content=body)

    registry, module = _mock(flaky)
    assert (await registry.list_models(ListModels())).items == []
    assert module.breaker.state == "closed"


async def test_garbage_answers_and_cut_streams_are_unavailable() -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("fetch_artifact"):
            item = msgspec.msgpack.encode(
                {"name": "m", "version": 1, "sha256": "x", "size": 1, "offset": 0, "data": b"x"}
            )
            return httpx.Response(200, content=frame(ITEM, item))  # no end frame
        if request.url.path.endswith("get_model"):
            return httpx.Response(502, text="<html>bad gateway</html>")
        return httpx.Response(200, content=b"\x00\x01 not an answer")

    registry, _ = _mock(garbage, breaker=CircuitBreaker("registry", threshold=100))
    with pytest.raises(Unavailable, match="not a list_models answer"):
        await registry.list_models(ListModels())
    with pytest.raises(Unavailable, match="HTTP 502"):
        await registry.get_model(GetModel(name="m"))
    with pytest.raises(Unavailable, match="before it ended"):
        _ = [c async for c in registry.fetch_artifact(FetchArtifact(ref="m"))]


async def test_a_slow_remote_fails_within_the_deadline() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    registry, _ = _mock(hang)
    with context.use(CallContext().with_timeout(0.2)), pytest.raises(DeadlineExceeded):
        await registry.get_model(GetModel(name="m"))


def test_the_breaker_probes_once_after_its_reset_time() -> None:
    now = [0.0]
    breaker = CircuitBreaker("x", threshold=2, reset_s=5, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(Unavailable):
        breaker.before_call()

    now[0] = 5.0
    breaker.before_call()  # the probe goes through
    assert breaker.state == "half_open"
    with pytest.raises(Unavailable):
        breaker.before_call()  # while it is out, nobody else does
    breaker.record_failure()
    assert breaker.state == "open"

    now[0] = 10.0
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed"


async def test_odd_contract_headers_are_a_version_mismatch(served: tuple[Any, KeyStore]) -> None:
    body = msgspec.msgpack.encode({"limit": 5})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served[0])) as http:
        answers = [
            await http.post(
                "http://quarry/rpc/registry/list_models",
                content=body,
                headers=[(b"authorization", f"Bearer {TOKEN}".encode()), (b"quarry-contract", h)],
            )
            for h in (b"registry/\xb2", b"registry/" + b"1" * 5000, b"registry/-1", b"\xff")
        ]
    for answer in answers:
        assert answer.status_code == 400
        assert answer.headers["content-type"] == "application/x-msgpack"
        assert msgspec.msgpack.decode(answer.content)["code"] == ContractVersionMismatch.code


@pytest.mark.parametrize(
    "ref", ["m:\u00b2", "m:\u0663", "m:" + "1" * 5000, "m:99999999999999999999", "m@v" + "9" * 30]
)
async def test_odd_version_references_are_invalid_input(
    served: tuple[Any, KeyStore], ref: str
) -> None:
    registry = remote(served[0], TOKEN)
    await registry.register_version(RegisterVersion(name="m", artifact=linear_onnx()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served[0])) as http:
        for method in ("get_version", "fetch_artifact"):
            answer = await http.post(
                f"http://quarry/rpc/registry/{method}",
                content=msgspec.msgpack.encode({"ref": ref}),
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            if method == "fetch_artifact":  # a stream: the error is its only frame
                assert answer.content[:1] == b"E", answer.content
                error = msgspec.msgpack.decode(answer.content[5:])
            else:
                assert answer.status_code == 400, answer.content
                error = msgspec.msgpack.decode(answer.content)
            assert error["code"] == "invalid_input", (method, error)


async def test_one_trace_spans_the_caller_and_the_remote(served: tuple[Any, KeyStore]) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from app.kernel import telemetry

    exporter = InMemorySpanExporter()
    stop = telemetry.export_spans(SimpleSpanProcessor(exporter), sampler=ALWAYS_ON)
    registry = remote(served[0], TOKEN)
    try:
        with trace.get_tracer("tests").start_as_current_span("caller") as parent:
            await registry.list_models(ListModels())
    finally:
        stop()

    trace_id = parent.get_span_context().trace_id
    served_spans = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "registry.list_models" and s.attributes.get("quarry.caller") == "http"
    ]
    assert len(served_spans) == 1
    assert served_spans[0].context.trace_id == trace_id


async def test_pooled_connections_fail_as_the_mocked_ones_do() -> None:
    """Without an injected transport: a remote nobody listens on, then one that never answers."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the request, answers nothing until the caller gives up
        writer.close()

    listening = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    async with listening:
        module = RemoteModule("registry", url, RegistryService, VERSION, token=TOKEN)
        with context.use(CallContext().with_timeout(0.2)), pytest.raises(DeadlineExceeded):
            await module.proxy().get_model(GetModel(name="m"))
        await module.aclose()

    down = RemoteModule("registry", url, RegistryService, VERSION, token=TOKEN, backoff_s=0.001)
    with pytest.raises(Unavailable, match=r"unreachable: .*Connect"):
        await down.proxy().get_model(GetModel(name="m"))
    assert down.breaker.state == "closed"  # three failed attempts, under the threshold of five
    await down.aclose()


async def test_an_rpc_error_answers_its_status_headers_and_body(tmp_path: Path) -> None:
    from app.kernel.http.app import create_http_app
    from app.kernel.http.auth import auth_middleware
    from app.kernel.rpc import rpc_router

    class Overloaded:
        def __getattr__(self, name: str) -> Any:
            async def fail(*_: Any) -> Any:
                raise Unavailable("the registry is overloaded", retry_after=7)

            return fail

    settings = Settings(data_dir=tmp_path, service_token=TOKEN)
    router = rpc_router("registry", RegistryService, VERSION, Overloaded(), settings)
    app: Any = create_http_app(
        settings=settings,
        platform=BarePlatform(),
        route_handlers=[router],
        middleware=[auth_middleware(settings, KeyStore(settings.keys_file))],
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        answer = await http.post(
            "http://quarry/rpc/registry/list_models",
            content=msgspec.msgpack.encode({}),
            headers={"authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "7"
    assert answer.headers["content-type"] == "application/x-msgpack"
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert msgspec.msgpack.decode(answer.content)["code"] == "unavailable"

    with pytest.raises(Unavailable, match="overloaded") as raised:
        await remote(app, TOKEN).list_models(ListModels())
    assert raised.value.retry_after == 7
