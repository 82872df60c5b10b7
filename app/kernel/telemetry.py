"""Telemetry: OpenTelemetry traces and metrics, Prometheus text, structured JSON logs.

Set up once per process by :func:`configure` (idempotent). Tracing follows the standard
``OTEL_*`` variables (``OTEL_TRACES_EXPORTER`` = ``none`` | ``console`` | ``otlp``,
``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_SERVICE_NAME``).

- **No exporter** (the default: ``OTEL_TRACES_EXPORTER`` unset or ``none`` and no
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and no span processor
  added later: the sampler's decision is "drop", so no span is built, while every span still has
  a trace id, which logs show and ``traceparent`` carries (unsampled) to the next process.
- **An exporter**: ``OTEL_TRACES_EXPORTER``, or an OTLP endpoint alone (which means ``otlp``).
  The sampler is ``OTEL_TRACES_SAMPLER`` when set, else parent-based trace-id ratio
  (:data:`DEFAULT_TRACE_RATIO` of new traces, ``OTEL_TRACES_SAMPLER_ARG`` to change it; a caller's
  sampled or unsampled ``traceparent`` is followed).

Metrics go through an OpenTelemetry meter to a Prometheus reader; every duration is in seconds
with buckets starting below one millisecond.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import structlog
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from prometheus_client import REGISTRY, generate_latest

from app.kernel import context

__all__ = [
    "DEFAULT_TRACE_RATIO",
    "DURATION_BUCKETS",
    "configure",
    "export_spans",
    "meter",
    "metrics_text",
    "spans_recorded",
    "tracer",
]

DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Histogram bucket bounds in seconds: from 100 µs up to a minute."""

DEFAULT_TRACE_RATIO = 0.1
"""The share of new traces recorded when an exporter is configured and ``OTEL_TRACES_SAMPLER``
is not set (``OTEL_TRACES_SAMPLER_ARG`` overrides it): one request in ten."""

_lock = threading.Lock()
_configured = False


def configure(
    *, service_name: str = "quarry", log_level: str = "INFO", log_format: str = "auto"
) -> None:
    """Set up tracing, metrics and logging for this process (later calls only adjust logging).

    ``log_format`` is ``json``, ``console``, or ``auto``: console when stderr is a terminal (a
    person reads it), json otherwise (a log collector does).
    """
    global _configured  # noqa: PLW0603 - process-wide providers can be installed once only
    _configure_logging(log_level, log_format)
    with _lock:
        if _configured:
            return
        os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
        )
        trace.set_tracer_provider(_tracer_provider(resource))
        view = View(
            instrument_type=Histogram,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=DURATION_BUCKETS),
        )
        provider = MeterProvider(
            resource=resource,
            metric_readers=[PrometheusMetricReader(scope_info_enabled=False)],
            views=[view],
        )
        metrics.set_meter_provider(provider)
        _configured = True


class _WhileExported(Sampler):
    """The configured sampler once spans have somewhere to go; "drop" until then."""

    def __init__(self, provider: _ExportingTracerProvider, sampler: Sampler) -> None:
        self._provider = provider
        self.sampler = sampler

    def should_sample(self, parent_context: Any, *args: Any, **kwargs: Any) -> SamplingResult:
        if self._provider.exporting:
            return self.sampler.should_sample(parent_context, *args, **kwargs)
        parent = trace.get_current_span(parent_context).get_span_context()
        return SamplingResult(Decision.DROP, trace_state=parent.trace_state)

    def get_description(self) -> str:
        return f"WhileExported{{{self.sampler.get_description()}}}"


class _ExportingTracerProvider(TracerProvider):
    """A tracer provider that records spans only once a span processor is added."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource=resource, sampler=_configured_sampler())
        self.exporting = False
        self.gate = _WhileExported(self, self.sampler)
        self.sampler = self.gate

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.exporting = True

    def remove_span_processor(self, span_processor: SpanProcessor) -> None:
        """Stop sending spans to ``span_processor`` (the SDK offers no way: its multi-processor
        keeps a tuple, replaced here under its lock)."""
        active = self._active_span_processor
        with active._lock:
            kept = tuple(p for p in active._span_processors if p is not span_processor)
            active._span_processors = kept
        self.exporting = bool(kept)


def _configured_sampler() -> Sampler:
    """``OTEL_TRACES_SAMPLER`` when set (read as the SDK reads it), else parent-based trace-id
    ratio at ``OTEL_TRACES_SAMPLER_ARG`` or :data:`DEFAULT_TRACE_RATIO`."""
    if os.environ.get("OTEL_TRACES_SAMPLER", "").strip():
        return sampling._get_from_env_or_default()
    raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = float(raw) if raw else DEFAULT_TRACE_RATIO
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG={raw!r} is not valid: expected a ratio 0..1")
    return sampling.ParentBased(sampling.TraceIdRatioBased(ratio))


def _exporter_name() -> str:
    """``OTEL_TRACES_EXPORTER``; when unset, ``otlp`` if an OTLP endpoint is set, else none."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if name:
        return name
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return "otlp" if any(os.environ.get(v, "").strip() for v in endpoints) else "none"


def _tracer_provider(resource: Resource) -> TracerProvider:
    provider = _ExportingTracerProvider(resource)
    exporter = _span_exporter(_exporter_name())
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _span_exporter(name: str) -> SpanExporter | None:
    if name in ("", "none"):
        return None
    if name == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )
        except ImportError:
            logging.getLogger("quarry").warning(
                "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http; spans are"
                " not exported"
            )
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not valid: expected none, console or otlp")


def export_spans(processor: SpanProcessor, *, sampler: Sampler | None = None) -> Callable[[], None]:
    """Send this process's spans to ``processor`` from now on (tests, embedding applications),
    sampled by ``sampler`` when given (``ALWAYS_ON`` to see every span) instead of the
    configured one. Needs :func:`configure` first.

    Answers ``stop``: it detaches and shuts down ``processor`` and puts the sampler back, so a
    shut processor is not left to warn about every later span.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, _ExportingTracerProvider):
        raise RuntimeError("telemetry.configure() has not set up this process's tracing")
    before = provider.gate.sampler
    if sampler is not None:
        provider.gate.sampler = sampler
    provider.add_span_processor(processor)

    def stop() -> None:
        provider.remove_span_processor(processor)
        provider.gate.sampler = before
        processor.shutdown()

    return stop


def spans_recorded() -> bool:
    """Whether spans may be recorded in this process: an exporter or span processor receives
    them, or :func:`configure` has not run (spans then go wherever the process's own tracer
    provider sends them). ``False`` lets hot paths skip making spans nobody will see."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, _ExportingTracerProvider) or provider.exporting


def tracer(name: str = "quarry") -> trace.Tracer:
    """The tracer for ``name``."""
    return trace.get_tracer(name)


def meter(name: str = "quarry") -> metrics.Meter:
    """The meter for ``name``."""
    return metrics.get_meter(name)


class _Rendering:
    """One render of ``/metrics`` that scrapes arriving while it runs wait for and share."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.text = b""
        self.error: BaseException | None = None


_rendering: _Rendering | None = None
_rendering_lock = threading.Lock()


def metrics_text() -> bytes:
    """Every metric of this process in the Prometheus text format.

    Blocking (call it on a worker thread). Calls that overlap share one render, so a burst of
    scrapes costs one render's CPU, not one each.
    """
    global _rendering  # noqa: PLW0603 - the render in flight, shared by every caller
    with _rendering_lock:
        rendering, leader = _rendering, _rendering is None
        if rendering is None:
            rendering = _rendering = _Rendering()
    if leader:
        try:
            rendering.text = generate_latest(REGISTRY)
        except BaseException as exc:
            rendering.error = exc
        finally:
            with _rendering_lock:
                _rendering = None
            rendering.done.set()
    else:
        rendering.done.wait()
    if rendering.error is not None:
        raise rendering.error
    return rendering.text


def _add_trace_ids(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event["trace_id"] = f"{span.trace_id:032x}"
        event["span_id"] = f"{span.span_id:016x}"
    return event


def _add_request_id(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = context.current().request_id
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _configure_logging(level: str, fmt: str) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        _add_request_id,
        structlog.stdlib.ExtraAdder(),
    ]
    if fmt == "auto":
        fmt = "console" if _is_terminal(sys.stderr) else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_quarry", False)]:
        root.removeHandler(old)
    handler._quarry = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))  # one line per call
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
