"""The call context, server spans and HTTP metrics for every request, cheap for the requests a
sampler drops.

:class:`RequestMiddleware` replaces litestar's OpenTelemetry plugin (the OpenTelemetry ASGI
middleware), which on a 2-core VM cost ~450 µs of CPU per prediction at 1 % sampling: request
attributes collected, ``receive`` and ``send`` wrapped in child spans, and six SDK metric
measurements, whether or not the request was sampled. Here:

- the span continues a ``traceparent`` sent by the caller; it is a server span whose request
  attributes, response status code and error status follow the HTTP semantic conventions, and
  they are computed only when the sampler records the span. ``receive``/``send`` get no child
  spans.
- the metrics keep the names, units, descriptions and labels the OpenTelemetry middleware gave
  them (``http.server.request.duration``, ``http.server.active_requests``,
  ``http.server.request.body.size``, ``http.server.response.body.size``), recorded through
  :mod:`app.kernel.metrics` at ~1 µs each.

``http.route`` is the template of the route that answered (``/v1/predict/{model_ref}``), as the
semantic conventions define it, and the span is named ``"<METHOD> <route>"``. A request no route
matched (404, 405, or refused before routing) gets :data:`UNMATCHED_ROUTE` as its label and a span
named after its method only. The raw path never becomes a label: a label value per path anyone
requests would grow ``/metrics`` without bound and publish every URL asked for.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.asgi import (
    asgi_getter,
    collect_request_attributes,
    set_status_code,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.http import sanitize_method

from app.kernel import context, metrics, telemetry
from app.kernel.context import CallContext
from app.kernel.http.context import read_context, send_error
from contracts.common import QuarryError

__all__ = ["UNMATCHED_ROUTE", "RequestMiddleware", "route_of", "unrecorded_span"]

UNMATCHED_ROUTE = "<unmatched>"
"""The ``http.route`` label of a request that no route matched."""

_PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})
_RANDOM_IDS = RandomIdGenerator()
_MAX_REMEMBERED = 4096
"""Label sets whose series a request finds without asking the instruments."""
_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
"""Methods whose label is themselves, without OpenTelemetry's ``sanitize_method``, which reads
an environment variable on every call (a tenth of a prediction's CPU time when profiled)."""


def _method(raw: str) -> str:
    """The ``http.request.method`` label of any other method (``_OTHER`` for unknown ones)."""
    return sanitize_method(raw) or "_OTHER"


class _Instruments:
    """The HTTP server metrics, created once per process on first use."""

    _made: _Instruments | None = None

    def __init__(self) -> None:
        self.duration = metrics.Histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
        )
        self.active = metrics.UpDownCounter(
            "http.server.active_requests",
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        self.request_size = metrics.Histogram(
            "http.server.request.body.size",
            unit="By",
            description="Size of HTTP server request bodies.",
        )
        self.response_size = metrics.Histogram(
            "http.server.response.body.size",
            unit="By",
            description="Size of HTTP server response bodies.",
        )

        self._series: dict[tuple[Any, ...], tuple[metrics.Series, ...]] = {}

    def series(self, measured: dict[str, Any]) -> tuple[metrics.Series, ...]:
        """The duration, request size and response size series of a request's labels, found
        once per label set (a series beyond an instrument's cap is looked up every time)."""
        key = tuple(measured.items())
        found = self._series.get(key)
        if found is None:
            histograms = (self.duration, self.request_size, self.response_size)
            found = tuple(h.series(measured) for h in histograms)
            bounded = not any(h.is_overflow(s) for h, s in zip(histograms, found, strict=True))
            if bounded and len(self._series) < _MAX_REMEMBERED:
                self._series[key] = found
        return found

    @classmethod
    def get(cls) -> _Instruments:
        if cls._made is None:
            cls._made = cls()
        return cls._made


class RequestMiddleware:
    """The one ASGI layer around the app: the call context, a server span and the HTTP metrics.

    Every HTTP request gets its call context (:func:`app.kernel.http.context.read_context`:
    request id, deadline, idempotency key; a malformed deadline is answered 400 here) and its
    ``x-request-id`` echoed, with ``headers`` (fixed ones, such as the worker's) added to every
    answer. Paths matching one of ``exclude`` (regular expressions searched in the path, as
    litestar's ``exclude`` does) get no span and no metrics: probes, ``/metrics``, and ``/rpc/``,
    whose route continues the caller's trace itself.

    One layer instead of two (the request context used to be a litestar middleware inside the
    router, wrapping ``send`` a second time): each layer costs on every request and again each
    time the request's coroutine chain resumes.
    """

    def __init__(
        self, app: Any, *, exclude: Sequence[str] = (), headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.app = app
        self._exclude = re.compile("|".join(exclude)) if exclude else None
        self._tracer = telemetry.tracer("quarry.http")
        self._headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, ctx = read_context(scope["headers"])
        added = [(b"x-request-id", request_id.encode("latin-1")), *self._headers]
        app = self.app if isinstance(ctx, CallContext) else _refusing(ctx)
        token = context.enter(ctx if isinstance(ctx, CallContext) else CallContext())
        try:
            if self._exclude is not None and self._exclude.search(scope["path"]):
                await app(scope, receive, _adding(send, added))
            else:
                await self._traced(app, scope, receive, send, added)
        finally:
            context.leave(token)

    async def _traced(
        self, app: Any, scope: Any, receive: Any, send: Any, added: list[tuple[bytes, bytes]]
    ) -> None:
        started = time.perf_counter()
        instruments = _Instruments.get()
        method = _METHODS.get(scope["method"]) or _method(scope["method"])
        parent, request_size = _read_headers(scope)
        if telemetry.spans_recorded():
            span = self._tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
        else:
            span = unrecorded_span(parent)
        recording = span.is_recording()
        if recording:
            span.set_attributes(collect_request_attributes(scope, _StabilityMode.HTTP))  # type: ignore[no-untyped-call]
        labels = {"http.request.method": method, "url.scheme": scope.get("scheme", "http")}
        measured: dict[str, Any] = {
            **labels,
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        response_size: list[int] = []

        async def traced_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                if recording:
                    set_status_code(span, message["status"], measured, _StabilityMode.HTTP)  # type: ignore[no-untyped-call]
                else:
                    _status_labels(message["status"], measured)
                headers = message.get("headers", ())
                response_size.extend(int(v) for k, v in headers if k.lower() == b"content-length")
                message["headers"] = [*headers, *added]
            await send(message)

        active = instruments.active.series(labels)
        active.add(1)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await app(scope, receive, traced_send)
        except BaseException as exc:
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            measured["http.route"] = route = route_of(scope)
            if route is not UNMATCHED_ROUTE and span.is_recording():
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            duration, requests, responses = instruments.series(measured)
            duration.record(max(time.perf_counter() - started, 0.0))
            active.add(-1)
            if response_size:
                responses.record(response_size[0])
            if request_size is not None:
                requests.record(request_size)
            span.end()


def unrecorded_span(parent: otel_context.Context | None) -> trace.Span:
    """The span the SDK makes when its sampler drops one (no exporter), without asking it: the
    parent's trace id (a new random one without a parent), a new span id, unsampled flags and
    the parent's trace state. A third of the cost of ``start_span``, which on every request
    checks and builds what only a sampled span needs."""
    parent_context = trace.get_current_span(parent).get_span_context()
    ids = _id_generator()
    if parent_context.is_valid:
        trace_id = parent_context.trace_id
        random_id = parent_context.trace_flags.random_trace_id
    else:
        trace_id = ids.generate_trace_id()
        random_id = ids.is_trace_id_random()
    flags = TraceFlags.RANDOM_TRACE_ID if random_id else TraceFlags.DEFAULT
    return trace.NonRecordingSpan(
        SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=parent_context.trace_state,
        )
    )


def _id_generator() -> IdGenerator:
    provider = trace.get_tracer_provider()
    generator = getattr(provider, "id_generator", None)
    return generator if isinstance(generator, IdGenerator) else _RANDOM_IDS


def _status_labels(status: int, measured: dict[str, Any]) -> None:
    """The labels ``set_status_code`` gives the metrics of a server span, without a span."""
    measured["http.response.status_code"] = status
    if status < 100 or status >= 500:  # what OpenTelemetry counts as a server span's error
        measured["error.type"] = str(status)


def _adding(send: Any, added: list[tuple[bytes, bytes]]) -> Any:
    """``send`` adding ``added`` to the answer's headers."""

    async def adding(message: Any) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *added]
        await send(message)

    return adding


def _refusing(error: QuarryError) -> Any:
    """An ASGI app answering every request with ``error``."""

    async def refuse(_scope: Any, _receive: Any, send: Any) -> None:
        await send_error(send, error)

    return refuse


def route_of(scope: Any) -> str:
    """The template of the route that answered ``scope``; :data:`UNMATCHED_ROUTE` if none did."""
    template = scope.get("path_template")
    return template if isinstance(template, str) and template else UNMATCHED_ROUTE


def _read_headers(scope: Any) -> tuple[otel_context.Context | None, int | None]:
    """The trace context the caller sent (``None``: none) and the request's content length."""
    request_size = None
    propagated = False
    for key, value in scope["headers"]:
        if key == b"content-length":
            request_size = int(value) if value.isdigit() else None
        elif key in _PROPAGATED:
            propagated = True
    parent = propagate.extract(scope, getter=asgi_getter) if propagated else None
    return parent, request_size
