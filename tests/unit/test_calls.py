"""The call wrapper and the loopback codec, on a small contract defined here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import msgspec
import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from app.kernel import calls, context, telemetry
from app.kernel.codec import loopback
from app.kernel.context import CallContext
from app.kernel.dependencies import DependencyMonitor
from app.kernel.http.errors import exception_handlers
from contracts.common import (
    Conflict,
    DeadlineExceeded,
    InternalError,
    Scope,
    Unavailable,
    method,
)


class Echo(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    delay: float = 0.0


class EchoService(Protocol):
    @method(scope=Scope.READ, idempotent=True)
    async def echo(self, request: Echo) -> Echo: ...

    @method(scope=Scope.READ, streaming=True)
    def spell(self, request: Echo) -> AsyncIterator[Echo]: ...


class LocalEcho:
    async def echo(self, request: Echo) -> Echo:
        await asyncio.sleep(request.delay)
        if request.text == "conflict":
            raise Conflict("already there", details={"text": request.text})
        if request.text == "bug":
            raise KeyError("oops")
        return Echo(text=request.text.upper())

    async def spell(self, request: Echo) -> AsyncIterator[Echo]:
        for letter in request.text:
            await asyncio.sleep(request.delay)
            yield Echo(text=letter)


@pytest.fixture(autouse=True)
def _telemetry() -> None:
    telemetry.configure(log_format="console")


@pytest.fixture(params=["direct", "loopback"])
def echo(request: pytest.FixtureRequest) -> EchoService:
    impl = LocalEcho() if request.param == "direct" else loopback(EchoService, LocalEcho())
    bound: EchoService = calls.bind(EchoService, impl, module="echo", caller="tests")
    return bound


async def test_calls_pass_through_and_keep_typed_errors(echo: EchoService) -> None:
    assert await echo.echo(Echo(text="hi")) == Echo(text="HI")
    with pytest.raises(Conflict) as caught:
        await echo.echo(Echo(text="conflict"))
    assert caught.value.details == {"text": "conflict"}


async def test_unexpected_exceptions_become_internal_errors(echo: EchoService) -> None:
    with pytest.raises(InternalError, match=r"echo\.echo"):
        await echo.echo(Echo(text="bug"))


async def test_the_deadline_wins(echo: EchoService) -> None:
    with context.use(CallContext().with_timeout(0.05)), pytest.raises(DeadlineExceeded):
        await echo.echo(Echo(text="slow", delay=5))
    with context.use(CallContext(deadline=time.monotonic() - 1)), pytest.raises(DeadlineExceeded):
        await echo.echo(Echo(text="late"))


async def test_streams_yield_every_item_and_respect_the_deadline(echo: EchoService) -> None:
    assert [e.text async for e in echo.spell(Echo(text="abc"))] == ["a", "b", "c"]
    with context.use(CallContext().with_timeout(0.05)), pytest.raises(DeadlineExceeded):
        _ = [e async for e in echo.spell(Echo(text="abcdef", delay=1))]


async def test_calls_are_measured_by_caller_module_method_and_placement(echo: EchoService) -> None:
    await echo.echo(Echo(text="measured"))
    text = telemetry.metrics_text().decode()
    labels = 'caller="tests",le="0.0001",method="echo",module="echo",outcome="ok",placement="local"'
    assert f"quarry_contract_call_duration_seconds_bucket{{{labels}}}" in text


# --- driver failures: unavailable, not internal -----------------------------------------------


def _pg_down() -> Exception:
    import psycopg
    import sqlalchemy.exc

    orig = psycopg.OperationalError("connection failed: Connection refused")
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)


def _sqlite(message: str) -> Exception:
    import sqlite3

    import sqlalchemy.exc

    return sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


def _redis_down() -> Exception:
    import redis.exceptions

    return redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390.")


def _s3_down() -> Exception:
    import botocore.exceptions

    return botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3.invalid")


def _duplicate() -> Exception:
    import psycopg
    import sqlalchemy.exc

    return sqlalchemy.exc.IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("dup"))


class Broken:
    """An implementation whose every call raises what ``failure`` makes."""

    def __init__(self, failure: Callable[[], Exception]) -> None:
        self.failure = failure

    async def echo(self, request: Echo) -> Echo:
        raise self.failure()

    async def spell(self, request: Echo) -> AsyncIterator[Echo]:
        yield Echo(text="first")
        raise self.failure()


@pytest.mark.parametrize(
    ("failure", "dependency"),
    [
        (_pg_down, "postgresql"),
        (_redis_down, "redis"),
        (_s3_down, "s3"),
        (lambda: _sqlite("database is locked"), "sqlite"),
    ],
)
async def test_a_dependency_that_is_down_is_unavailable_naming_it(
    failure: Callable[[], Exception], dependency: str
) -> None:
    broken: EchoService = calls.bind(EchoService, Broken(failure), module="echo", caller="tests")
    with pytest.raises(Unavailable) as caught:
        await broken.echo(Echo(text="x"))
    assert caught.value.details == {"dependency": dependency, "module": "echo", "retry_after": 1.0}
    assert "127.0.0.1" not in caught.value.message
    with pytest.raises(Unavailable):
        _ = [e async for e in broken.spell(Echo(text="x"))]


@pytest.mark.parametrize("failure", [_duplicate, lambda: _sqlite("no such table: models")])
async def test_integrity_and_programming_errors_stay_what_they_are(
    failure: Callable[[], Exception],
) -> None:
    broken: EchoService = calls.bind(EchoService, Broken(failure), module="echo", caller="tests")
    with pytest.raises(InternalError):
        await broken.echo(Echo(text="x"))


async def test_a_lost_connection_marks_the_dependency_down_at_once() -> None:
    checked: list[str] = []

    async def check() -> None:
        checked.append("redis")
        if len(checked) > 1:
            raise ConnectionRefusedError

    monitor = DependencyMonitor(interval_s=3600)
    monitor.add("online_store", "redis", check)
    await monitor.start()
    try:
        assert monitor.unavailable() == []
        broken: EchoService = calls.bind(
            EchoService, Broken(_redis_down), module="echo", caller="t"
        )
        with pytest.raises(Unavailable):
            await broken.echo(Echo(text="x"))
        assert monitor.unavailable() == ["online_store"]  # before any new check
    finally:
        await monitor.stop()


def test_http_routes_answer_503_with_retry_after_for_a_dependency_that_is_down() -> None:
    @get("/down", sync_to_thread=False)
    def down() -> None:
        raise _pg_down()

    app = Litestar([down], exception_handlers=exception_handlers)
    with TestClient(app) as client:
        answer = client.get("/down")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["code"] == "unavailable"
    assert answer.json()["details"] == {"dependency": "postgresql", "retry_after": 1.0}
