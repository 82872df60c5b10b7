"""Deadlines of contract calls: enforced whether the implementation suspends or not."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import msgspec
import pytest

from app.kernel import calls, context, telemetry
from app.kernel.context import CallContext
from contracts.common import DeadlineExceeded, Scope, method


class Step(msgspec.Struct, frozen=True, kw_only=True):
    turns: int = 0
    """Times the implementation lets the event loop turn before it answers."""
    wait: float = 0.0
    """Seconds it then waits."""
    timeout: bool = False
    """Whether it raises ``TimeoutError`` without suspending."""


class Turns(msgspec.Struct, frozen=True, kw_only=True):
    turns: int


class StepService(Protocol):
    @method(scope=Scope.READ, idempotent=True)
    async def step(self, request: Step) -> Turns: ...


class LocalStep:
    def __init__(self) -> None:
        self.cancelled = 0
        self.started = asyncio.Event()

    async def step(self, request: Step) -> Turns:
        if request.timeout:
            raise TimeoutError("the implementation's own timeout")
        try:
            for _ in range(request.turns):
                await asyncio.sleep(0)
            self.started.set()
            await asyncio.sleep(request.wait)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Turns(turns=request.turns)


@pytest.fixture(autouse=True)
def _telemetry() -> None:
    telemetry.configure(log_format="console")


@pytest.fixture
def impl() -> LocalStep:
    return LocalStep()


@pytest.fixture
def bound(impl: LocalStep) -> StepService:
    service: StepService = calls.bind(StepService, impl, module="steps", caller="tests")
    return service


class Instant:
    """An implementation that answers without ever suspending."""

    async def step(self, request: Step) -> Turns:
        return Turns(turns=request.turns + 1)


async def test_a_call_that_never_suspends_answers_within_its_deadline() -> None:
    service: StepService = calls.bind(StepService, Instant(), module="steps", caller="tests")
    with context.use(CallContext().with_timeout(10)):
        assert await service.step(Step(turns=41)) == Turns(turns=42)


async def test_a_call_that_suspends_many_times_answers_what_it_returns(bound: StepService) -> None:
    with context.use(CallContext().with_timeout(10)):
        assert await bound.step(Step(turns=25)) == Turns(turns=25)


async def test_the_deadline_cuts_a_call_off_after_it_first_suspended(
    bound: StepService, impl: LocalStep
) -> None:
    with context.use(CallContext().with_timeout(0.05)), pytest.raises(DeadlineExceeded):
        await bound.step(Step(turns=3, wait=5))
    assert impl.cancelled == 1


async def test_a_passed_deadline_refuses_the_call(bound: StepService, impl: LocalStep) -> None:
    with context.use(CallContext(deadline=time.monotonic() - 1)), pytest.raises(DeadlineExceeded):
        await bound.step(Step())
    assert not impl.started.is_set()


async def test_cancelling_the_caller_cancels_the_implementation(
    bound: StepService, impl: LocalStep
) -> None:
    with context.use(CallContext().with_timeout(10)):
        task = asyncio.ensure_future(bound.step(Step(turns=2, wait=5)))
    await impl.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert impl.cancelled == 1


async def test_a_timeout_error_of_the_implementation_is_a_deadline_error(
    bound: StepService,
) -> None:
    with context.use(CallContext().with_timeout(10)), pytest.raises(DeadlineExceeded):
        await bound.step(Step(timeout=True))
