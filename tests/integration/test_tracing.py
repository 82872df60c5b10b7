"""Tracing across processes: one predict-by-entity request is one trace.

Three platforms are served by uvicorn on free ports in background threads and talk real HTTP:
a gateway hosting no module, an inference process (registry and inference) and a features
process. Spans are caught by an in-memory exporter on the tracer provider that
:func:`app.kernel.telemetry.configure` installs. A second test checks that
``OTEL_TRACES_EXPORTER=otlp`` delivers spans as OTLP/protobuf to a receiver run by the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from app.bootstrap import Platform, create_app, remote_clients
from app.kernel import telemetry
from app.kernel.settings import Settings
from tests.fakes.server import free_port
from tests.integration.test_predict_by_entity import train_like

TOKEN = "tracing-test-token"
ROOT = Path(__file__).resolve().parents[2]
PREDICT = "POST /v1/predict/{model_ref}"


# --- fixtures -------------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a condition with a deadline, not standing in for one


@dataclass
class Served:
    """One platform served by uvicorn in a thread of its own (with its own event loop)."""

    name: str
    url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(name: str, settings: Settings) -> Served:
    """Serve ``settings``' platform; its app starts the platform and stops it on shutdown."""
    port = free_port()
    app = create_app(Platform(settings), host="127.0.0.1")
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="asyncio", log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"{name}-server", daemon=True)
    thread.start()
    served = Served(name, f"http://127.0.0.1:{port}", port, server, thread)
    try:
        _wait_for(lambda: server.started or not thread.is_alive(), f"the {name} server")
        if not server.started:
            raise RuntimeError(f"the {name} server did not start")
    except BaseException:
        served.stop()
        raise
    return served


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Every span this process ends from now on (root spans must be sampled: checked)."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    telemetry.configure(log_level="WARNING")
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    stop = telemetry.export_spans(processor, sampler=ALWAYS_ON)
    try:
        with telemetry.tracer("tests").start_as_current_span("probe") as probe:
            assert probe.is_recording(), "the process-wide sampler drops root spans"
        exporter.clear()
        yield exporter
    finally:
        stop()  # detached, so later spans of this process do not reach a shut processor


@pytest.fixture
def topology(tmp_path: Path, spans: InMemorySpanExporter) -> Iterator[dict[str, Served]]:
    """Features in F; registry and inference in I, calling F; a gateway G hosting nothing."""
    served: dict[str, Served] = {}
    try:
        served["features"] = serve(
            "features",
            Settings(
                data_dir=tmp_path / "f",
                modules=("features",),
                service_token=TOKEN,
                log_level="WARNING",
            ),
        )
        features = served["features"].url
        served["inference"] = serve(
            "inference",
            Settings(
                data_dir=tmp_path / "i",
                modules=("registry", "inference"),
                remotes={"features": features},
                service_token=TOKEN,
                log_level="WARNING",
            ),
        )
        inference = served["inference"].url
        served["gateway"] = serve(
            "gateway",
            Settings(
                data_dir=tmp_path / "g",
                modules=(),
                remotes={"registry": inference, "inference": inference, "features": features},
                service_token=TOKEN,
                log_level="WARNING",
            ),
        )
        yield served
    finally:
        for name in ("gateway", "inference", "features"):
            if name in served:
                served[name].stop()


# --- one request, one trace -----------------------------------------------------------------


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _call(spans: list[ReadableSpan], name: str, placement: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name and _attrs(s).get("quarry.placement") == placement]
    seen = sorted(f"{s.name} ({_attrs(s).get('quarry.placement', s.kind.name)})" for s in spans)
    assert len(found) == 1, f"expected one {name} span ({placement}) in the trace: {seen}"
    return found[0]


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_predict_by_entity_is_one_trace_across_three_processes(
    topology: dict[str, Served], spans: InMemorySpanExporter
) -> None:
    gateway = topology["gateway"]
    async with remote_clients(gateway.url, TOKEN) as clients:
        await train_like(type("Q", (), clients))
    spans.clear()

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        answer = await http.post("/v1/predict/churn", json={"entities": {"user_id": [1, 3]}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["y"]  # the model ran on the features F served

    def server_spans() -> list[ReadableSpan]:
        return [
            s for s in spans.get_finished_spans() if s.name == PREDICT and s.kind is SpanKind.SERVER
        ]

    # the gateway ends its server span after the response went out: wait for it to end
    _wait_for(lambda: len(server_spans()) == 1, "the gateway's server span")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.force_flush()
    (root,) = server_spans()
    assert root.parent is None  # the request started the trace
    assert _attrs(root).get("server.port") == gateway.port
    assert _attrs(root).get("http.response.status_code") == 200
    trace_id = root.context.trace_id
    traced = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    request_spans = [
        s
        for s in spans.get_finished_spans()
        if s.name in ("inference.predict", "features.get_online_vectors")
    ]
    assert {s.context.trace_id for s in request_spans} == {trace_id}  # none started a trace

    # G: its public route calls inference, which is remote; I: the RPC route runs predict,
    # which calls features, remote again; F: the RPC route runs get_online_vectors
    g_inference = _call(traced, "inference.predict", "remote")
    i_inference = _call(traced, "inference.predict", "local")
    i_features = _call(traced, "features.get_online_vectors", "remote")
    f_features = _call(traced, "features.get_online_vectors", "local")
    assert _attrs(g_inference)["quarry.caller"] == "http"
    assert _attrs(i_features)["quarry.caller"] == "inference"

    # each process runs in a thread of its own, so a trace crosses over only by `traceparent`:
    # a span whose parent came over the wire has a remote parent context
    by_id = {s.context.span_id: s for s in traced}
    assert _ancestors(f_features, by_id) == [i_features, i_inference, g_inference, root]
    for served_here, called_there in ((f_features, i_features), (i_inference, g_inference)):
        assert served_here.parent is not None
        assert served_here.parent.is_remote
        assert served_here.parent.span_id == called_there.context.span_id


def _python(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``script`` in a fresh interpreter (its own tracer provider); it must succeed."""
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done


def _without_otel() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


# --- no exporter: no spans, trace ids still ------------------------------------------------

NO_EXPORTER = """
import logging
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from app.kernel import telemetry
telemetry.configure(log_level="INFO")
tracer = telemetry.tracer("tests")
with tracer.start_as_current_span("unexported") as span:
    print(span.is_recording(), f"{span.get_span_context().trace_id:032x}", flush=True)
    logging.getLogger("tests").info("inside")
telemetry.export_spans(SimpleSpanProcessor(InMemorySpanExporter()), sampler=ALWAYS_ON)
with tracer.start_as_current_span("exported") as span:
    print(span.is_recording(), flush=True)
"""


def test_without_an_exporter_spans_are_not_recorded_but_logs_keep_trace_ids() -> None:
    done = _python(NO_EXPORTER, _without_otel())
    unexported, exported = done.stdout.decode().splitlines()
    recording, trace_id = unexported.split()
    assert recording == "False"
    assert int(trace_id, 16) != 0
    [logged] = [json.loads(line) for line in done.stderr.decode().splitlines() if "inside" in line]
    assert logged["trace_id"] == trace_id
    assert exported == "True"  # a span processor added later gets spans from then on


CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"

PROPAGATE_UNRECORDED = f"""
from litestar import get
from litestar.testing import TestClient
from opentelemetry import propagate, trace
from app.kernel import telemetry
from app.kernel.http.app import create_http_app
from app.kernel.settings import Settings

@get("/v1/onward", sync_to_thread=False)
def onward() -> dict[str, object]:
    headers: dict[str, str] = {{}}
    propagate.inject(headers)  # what an RPC call, a task message or an event carries on
    return {{"recording": trace.get_current_span().is_recording(), **headers}}

class Platform:
    draining = False
    def readiness(self): return {{}}
    def module_statuses(self): return []

telemetry.configure(log_level="WARNING")
app = create_http_app(settings=Settings(), platform=Platform(), route_handlers=[onward])
caller = {{"traceparent": "00-{CALLER_TRACE}-b7ad6b7169203331-01"}}
with TestClient(app) as client:
    answer = client.get("/v1/onward", headers=caller)
print(answer.json()["recording"], answer.json()["traceparent"])
"""


def test_without_an_exporter_a_callers_trace_goes_on_to_the_next_hop_unrecorded() -> None:
    done = _python(PROPAGATE_UNRECORDED, _without_otel())
    recording, traceparent = done.stdout.decode().split()
    assert recording == "False"
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert (version, trace_id) == ("00", CALLER_TRACE)
    assert span_id != "b7ad6b7169203331"  # the server's own (unrecorded) span is the parent


SAMPLING = """
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from app.kernel import telemetry
telemetry.configure(log_level="WARNING")
tracer = telemetry.tracer("tests")
def caller(sampled: bool):
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, flags)
    return set_span_in_context(NonRecordingSpan(parent))
sampled = tracer.start_span("sampled", context=caller(True)).is_recording()
unsampled = tracer.start_span("unsampled", context=caller(False)).is_recording()
roots = sum(tracer.start_span("root").is_recording() for _ in range(2000))
print(sampled, unsampled, roots)
"""


@pytest.mark.parametrize(
    "variables",
    [{"OTEL_TRACES_EXPORTER": "console"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}],
)
def test_with_an_exporter_the_default_sampler_follows_the_caller_and_samples_a_tenth(
    variables: dict[str, str],
) -> None:
    done = _python(SAMPLING, {**_without_otel(), **variables, "OTEL_BSP_SCHEDULE_DELAY": "600000"})
    sampled, unsampled, roots = done.stdout.decode().split()
    assert (sampled, unsampled) == ("True", "False")
    assert 100 < int(roots) < 300  # 10 % of 2000 new traces; far outside is a broken sampler


# --- OTLP export ----------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    content_type: str
    body: bytes


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Received]]]:
    """A tiny OTLP/HTTP receiver: records every POST and answers 200."""
    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            received.append(Received(self.path, self.headers.get("content-type", ""), body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


EXPORT_ONE_SPAN = """
from opentelemetry import trace
from app.kernel import telemetry
telemetry.configure()
with telemetry.tracer("tests").start_as_current_span("exported"):
    pass
trace.get_tracer_provider().shutdown()  # flushes the batch processor
"""


def test_otlp_exporter_posts_protobuf_spans(receiver: tuple[str, list[Received]]) -> None:
    endpoint, received = receiver
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "always_on",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    _python(EXPORT_ONE_SPAN, env)
    traces = [r for r in received if r.path == "/v1/traces"]
    assert traces, f"nothing posted to /v1/traces: {received}"
    assert traces[0].content_type == "application/x-protobuf"
    assert traces[0].body
    assert b"exported" in traces[0].body  # the span's name, inside the protobuf
