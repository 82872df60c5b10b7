"""The call wrapper: every contract call goes through it, whatever the transport.

:func:`bind` turns an implementation of a contract Protocol into an object with the same methods,
each wrapped once (not per call) to enforce the call's deadline, open a tracing span and record
the ``quarry_contract_call_duration_seconds`` histogram labelled by caller, module, method and
placement. A driver's connection failure becomes :class:`~contracts.common.Unavailable` naming
the dependency (:func:`app.kernel.errors.unavailable_from`); other unexpected exceptions become
:class:`~contracts.common.InternalError`, as they would over a remote transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from app.kernel import context, metrics, telemetry
from app.kernel.errors import refused_value, unavailable_from
from app.kernel.protocols import ContractMethod, describe
from contracts.common import DeadlineExceeded, InternalError, InvalidInput, QuarryError

__all__ = ["ContractClient", "bind"]

_log = logging.getLogger("quarry.calls")


class ContractClient:
    """A bound contract: one attribute per Protocol method, plus where it is bound."""

    def __init__(self, protocol: type, module: str, placement: str) -> None:
        self.protocol = protocol
        self.module = module
        self.placement = placement

    def __repr__(self) -> str:
        return f"<{self.protocol.__name__} {self.module} ({self.placement})>"


class _Instruments:
    """Created on first use so that importing the kernel touches no global state."""

    _duration: metrics.Histogram | None = None

    @classmethod
    def duration(cls) -> metrics.Histogram:
        if cls._duration is None:
            cls._duration = metrics.Histogram(
                "quarry.contract.call.duration",
                unit="s",
                description="Duration of contract calls, by caller, module, method and placement.",
            )
        return cls._duration


class _Durations:
    """The duration series of one bound method, one per outcome, looked up once each."""

    __slots__ = ("_labels", "_series")

    def __init__(self, labels: dict[str, str]) -> None:
        self._labels = labels
        self._series: dict[str, metrics.Series] = {}

    def record(self, seconds: float, outcome: str) -> None:
        series = self._series.get(outcome)
        if series is None:
            series = _Instruments.duration().series({**self._labels, "outcome": outcome})
            self._series[outcome] = series
        series.record(seconds)


def bind(
    protocol: type,
    implementation: Any,
    *,
    module: str,
    caller: str,
    placement: str = "local",
    checked: bool = False,
) -> Any:
    """Wrap ``implementation`` of ``protocol`` as seen by ``caller``.

    ``implementation`` may itself be a remote proxy; ``placement`` labels the metrics and spans.
    ``checked``: requests are checked against their contract type before the call, as a decoded
    body or RPC message is (for callers that build requests in Python: a Struct's constructor
    checks no types, ranges or literals).
    """
    client = ContractClient(protocol, module, placement)
    for method in describe(protocol):
        target = getattr(implementation, method.name)
        if checked and method.request is not None:
            target = _checking(method, target)
        labels = {"caller": caller, "module": module, "method": method.name, "placement": placement}
        wrapper = _stream_wrapper if method.info.streaming else _call_wrapper
        setattr(client, method.name, wrapper(method, target, labels))
    return client


_KEPT = (bytes, bytearray, memoryview, datetime.datetime, datetime.date, datetime.time)
"""Values a request keeps as they are while it is checked (no base64 or text round trip)."""


def _checking(method: ContractMethod, target: Callable[..., Any]) -> Callable[..., Any]:
    """``target`` taking its request only once it passes the checks a decoded one would."""
    request_type, name = method.request, method.name

    def checked(request: Any) -> Any:
        try:
            plain = msgspec.to_builtins(request, builtin_types=_KEPT)
            request = msgspec.convert(plain, request_type, builtin_types=_KEPT)
        except (msgspec.ValidationError, TypeError) as exc:
            raise InvalidInput(f"invalid {name} request: {exc}") from None
        return target(request)

    return checked


_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)
"""What a call runs in when no span would be recorded: making one (a sampler decision, a
non-recording span made current and ended) was a fifth of the call wrapper's own cost."""


def _span_name(labels: dict[str, str]) -> str:
    return f"{labels['module']}.{labels['method']}"


def _unexpected(exc: Exception, labels: dict[str, str]) -> QuarryError:
    """``unavailable`` for a dependency's failure (the dependency monitor logs outages: not one
    line per call), else ``internal`` (logged with its stack trace)."""
    refused = refused_value(exc)
    if refused is not None:
        return refused
    outage = unavailable_from(exc, module=labels["module"])
    if outage is not None:
        _log.debug("%s: %s", _span_name(labels), outage.message, exc_info=exc)
        return outage
    _log.exception("unexpected error in %s", _span_name(labels))
    return InternalError(f"unexpected error in {_span_name(labels)}: {type(exc).__name__}")


def _call_wrapper(
    method: ContractMethod, target: Callable[..., Any], labels: dict[str, str]
) -> Callable[..., Any]:
    tracer = telemetry.tracer("quarry.calls")
    name = _span_name(labels)
    attributes = {f"quarry.{k}": v for k, v in labels.items()}
    durations = _Durations(labels)

    async def call(*args: Any) -> Any:
        deadline = context.current().deadline
        outcome = "ok"
        start = time.perf_counter()
        spanning = (
            tracer.start_as_current_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
            if telemetry.spans_recorded()
            else _NO_SPAN
        )
        with spanning as span:
            try:
                if deadline is None:
                    return await target(*args)
                if deadline <= time.monotonic():
                    raise DeadlineExceeded(f"deadline passed before {name} started")
                return await _before(target(*args), deadline, name)
            except QuarryError as exc:
                outcome = exc.code
                span.set_status(Status(StatusCode.ERROR, exc.code))
                raise
            except Exception as exc:
                error = _unexpected(exc, labels)
                outcome = error.code
                span.set_status(Status(StatusCode.ERROR, error.code))
                raise error from exc
            finally:
                durations.record(time.perf_counter() - start, outcome)

    call.__name__ = method.name
    call.__doc__ = target.__doc__
    return call


async def _before(awaitable: Awaitable[Any], deadline: float, name: str) -> Any:
    """``await awaitable`` cancelled at ``deadline``, the timer armed only once it suspends.

    A coroutine is first run up to its first suspension: one that returns without suspending
    (a fast in-process call) could not have been cancelled by a timer either, as the event loop
    never ran meanwhile, so it needs none (arming and cancelling one was a third of the call
    wrapper's cost). One that suspends is resumed under ``asyncio.timeout_at``.
    """
    try:
        if not isinstance(awaitable, types.CoroutineType):
            async with asyncio.timeout_at(_loop_time(deadline)):
                return await awaitable
        try:
            suspended = awaitable.send(None)
        except StopIteration as done:
            return done.value
        async with asyncio.timeout_at(_loop_time(deadline)):
            return await _resume(awaitable, suspended)
    except TimeoutError:
        raise DeadlineExceeded(f"{name} did not finish before its deadline") from None


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], suspended: Any) -> Generator[Any, Any, Any]:
    """The rest of ``coro``, suspended on ``suspended``: what ``await coro`` would do from there
    (values and exceptions the task sends are passed on, closing closes it)."""
    while True:
        try:
            sent = yield suspended
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                suspended = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            suspended = coro.send(sent)
        except StopIteration as done:
            return done.value


def _stream_wrapper(
    method: ContractMethod, target: Callable[..., Any], labels: dict[str, str]
) -> Callable[..., Any]:
    tracer = telemetry.tracer("quarry.calls")
    name = _span_name(labels)
    attributes = {f"quarry.{k}": v for k, v in labels.items()}
    durations = _Durations(labels)

    async def stream(*args: Any) -> AsyncIterator[Any]:
        # The span is made current only while the implementation runs, never across a yield:
        # the consumer may resume the stream from another task or context.
        deadline = context.current().deadline
        outcome = "ok"
        start = time.perf_counter()
        span = tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
        try:
            with trace.use_span(span, end_on_exit=False):
                iterator = target(*args).__aiter__()
            while True:
                try:
                    with trace.use_span(span, end_on_exit=False):
                        item = await _next(iterator, deadline)
                except StopAsyncIteration:
                    return
                yield item
        except QuarryError as exc:
            outcome = exc.code
            span.set_status(Status(StatusCode.ERROR, exc.code))
            raise
        except GeneratorExit:
            outcome = "cancelled"
            raise
        except Exception as exc:
            error = _unexpected(exc, labels)
            outcome = error.code
            span.set_status(Status(StatusCode.ERROR, error.code))
            raise error from exc
        finally:
            span.end()
            durations.record(time.perf_counter() - start, outcome)

    stream.__name__ = method.name
    stream.__doc__ = target.__doc__
    return stream


async def _next(iterator: AsyncIterator[Any], deadline: float | None) -> Any:
    if deadline is None:
        return await iterator.__anext__()
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            return await iterator.__anext__()
    except TimeoutError:
        raise DeadlineExceeded("stream did not finish before its deadline") from None


def _loop_time(deadline: float) -> float:
    """Convert a ``time.monotonic`` deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
