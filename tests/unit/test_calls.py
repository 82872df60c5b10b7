"""The call wrapper and the loopback codec, on a small contract defined here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol

import msgspec
import pytest

from app.kernel import calls, context, telemetry
from app.kernel.codec import loopback
from app.kernel.context import CallContext
from contracts.common import Conflict, DeadlineExceeded, InternalError, Scope, method


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
