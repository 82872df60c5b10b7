"""Calling one subscriber's handler for one event: decoding, the delivery span, error text."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from app.kernel.events._subscriptions import EventMeta, Subscription

__all__ = ["MAX_ERROR_CHARS", "call_handler"]

MAX_ERROR_CHARS = 2000
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("quarry.events")


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
