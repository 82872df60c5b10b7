"""Requests no exporter will see get the span context the SDK would have made, without the SDK."""

from __future__ import annotations

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from app.kernel import telemetry
from app.kernel.http.tracing import unrecorded_span

PARENTS = [
    {},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03", "tracestate": "a=1"},
    {"traceparent": "not a traceparent"},
]


def test_an_unrecorded_span_matches_the_one_the_sdk_makes_when_it_drops() -> None:
    telemetry.configure(log_level="WARNING")
    assert not telemetry.spans_recorded()
    tracer = trace.get_tracer("tests")
    for headers in PARENTS:
        parent = propagate.extract(headers)
        ours = unrecorded_span(parent)
        theirs = tracer.start_span("x", context=parent, kind=SpanKind.SERVER)

        assert not ours.is_recording()
        assert not theirs.is_recording()
        mine, sdk = ours.get_span_context(), theirs.get_span_context()
        assert mine.is_valid
        assert (mine.trace_flags, mine.trace_state, mine.is_remote) == (
            sdk.trace_flags,
            sdk.trace_state,
            sdk.is_remote,
        )
        if "-" in headers.get("traceparent", ""):
            assert mine.trace_id == sdk.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
        else:
            assert mine.trace_id != sdk.trace_id  # each a new random trace
        assert mine.span_id != sdk.span_id
