"""Calling one subscriber's handler for one event: decoding, the delivery span, error text."""

from __future__ import annotations

import logging
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from app.kernel.events._subscriptions import EventMeta, Subscription, Subscriptions

__all__ = ["MAX_ERROR_CHARS", "Delivery", "call_handler", "handle"]

MAX_ERROR_CHARS = 2000
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("quarry.events")


class Delivery(Protocol):
    """An event leased for delivery: a relay's claimed delivery or an inbox row."""

    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def created_at(self) -> float: ...
    @property
    def traceparent(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...


async def handle(
    subs: Subscriptions,
    d: Delivery,
    *,
    subscriber: str,
    publisher: str,
    logger: logging.Logger,
    max_attempts: int,
) -> str | None:
    """Make attempt ``d.attempts + 1`` at delivering ``d`` to ``subscriber``; answer the error
    text, or ``None`` on success."""
    sub = subs.get(d.type, subscriber)
    if sub is None:  # cannot happen: only what is handled here is leased, and none go away
        return f"{subscriber} does not handle {d.type} here"
    meta = EventMeta(
        id=d.event_id,
        type=d.type,
        publisher=publisher,
        created_at=d.created_at,
        attempt=d.attempts + 1,
        traceparent=d.traceparent,
    )
    return await call_handler(sub, d.payload, meta, logger=logger, max_attempts=max_attempts)


async def call_handler(
    sub: Subscription,
    payload: bytes,
    meta: EventMeta,
    *,
    logger: logging.Logger,
    max_attempts: int,
) -> str | None:
    """Decode ``payload`` and hand it to ``sub``; answer the error text, or ``None`` on success.

    The call runs in a consumer span named ``event <type> -> <subscriber>``, parented to the
    event's ``traceparent`` so the delivery joins the publisher's trace.
    """
    parent = _PROPAGATOR.extract({"traceparent": meta.traceparent}) if meta.traceparent else None
    attributes: dict[str, AttributeValue] = {
        "quarry.event.id": meta.id,
        "quarry.event.type": meta.type,
        "quarry.event.publisher": meta.publisher,
        "quarry.event.subscriber": sub.subscriber,
        "quarry.event.attempt": meta.attempt,
    }
    with _tracer.start_as_current_span(
        f"event {meta.type} -> {sub.subscriber}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            await sub.handler(sub.decoder.decode(payload), meta)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            logger.warning(
                "event handler failed",
                exc_info=True,
                extra={**attributes, "max_attempts": max_attempts},
            )
            return (str(exc) or repr(exc))[:MAX_ERROR_CHARS]
    return None
