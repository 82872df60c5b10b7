"""HTTP tracing and metrics: a caller's trace continues, /metrics reads like OpenTelemetry's,
routes are labelled by their template and every instrument is capped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import post
from litestar.params import FromPath
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.kernel import metrics, telemetry
from app.kernel.http.app import create_http_app
from app.kernel.settings import Settings
from tests.fakes.platform import BarePlatform

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@post("/v1/echo/{name:str}", status_code=200, sync_to_thread=False)
def echo(name: FromPath[str]) -> dict[str, str]:
    return {"name": name}


@post("/v1/measured/{name:str}", status_code=200, sync_to_thread=False)
def measured(name: FromPath[str]) -> dict[str, str]:
    return {"name": name}


@pytest.fixture
def client(tmp_path: Any) -> Iterator[TestClient[Any]]:
    telemetry.configure(log_level="WARNING")
    app = create_http_app(
        settings=Settings(data_dir=tmp_path),
        platform=BarePlatform(),
        route_handlers=[echo, measured],
    )
    with TestClient(app) as test_client:
        yield test_client


def test_a_sampled_caller_trace_gets_a_server_span_with_the_request_and_status(
    client: TestClient[Any],
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    stop = telemetry.export_spans(SimpleSpanProcessor(exporter))  # the sampler follows the caller
    parent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
    try:
        assert client.post("/v1/echo/traced", headers={"traceparent": parent}).status_code == 200
    finally:
        stop()

    [span] = [s for s in exporter.get_finished_spans() if s.name == "POST /v1/echo/{name}"]
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.kind == trace.SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/v1/echo/{name}"
    assert span.attributes["url.path"] == "/v1/echo/traced"
    assert span.attributes["http.response.status_code"] == 200


@pytest.fixture
def uncapped(client: TestClient[Any]) -> Iterator[None]:
    """The HTTP instruments are process-wide: a long test run fills their series cap with
    other tests' routes, so this test lifts the cap while it runs (after ``client``, whose app
    sets the cap from its settings)."""

    before = metrics.series_limit()
    metrics.limit_series(1 << 30)
    yield
    metrics.limit_series(before)


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels are ``labels``, read as Prometheus reads it:
    a label with an empty value is the same as no label (the overflow marker, once any instrument
    of the process has overflowed, adds ``otel_metric_overflow=""`` to every other series)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            present = {k: v for k, v in sample.labels.items() if v != ""}
            if sample.name == name and present == labels:
                return float(sample.value)
    return None


@pytest.mark.usefixtures("uncapped")
def test_requests_are_measured_with_the_opentelemetry_names_and_labels(
    client: TestClient[Any],
) -> None:
    client.post("/v1/measured/raw-path", content=b"{}")
    text = client.get("/metrics").text
    labels = {
        "http_request_method": "POST",
        "http_response_status_code": "200",
        "http_route": "/v1/measured/{name}",
        "le": "+Inf",
        "network_protocol_version": "1.1",
        "url_scheme": "http",
    }
    assert _sample(text, "http_server_request_duration_seconds_bucket", **labels) == 1.0
    assert _sample(text, "http_server_request_body_size_bytes_bucket", **labels) == 1.0
    active = {"http_request_method": "POST", "url_scheme": "http"}
    assert _sample(text, "http_server_active_requests", **active) == 0.0
    assert 'http_route="/metrics"' not in client.get("/metrics").text
    assert "raw-path" not in text


@pytest.mark.parametrize(("method", "path"), [("GET", "/no/such/thing"), ("GET", "/v1/echo/x")])
def test_unmatched_requests_share_one_route_label(
    client: TestClient[Any], method: str, path: str
) -> None:
    status = client.request(method, path).status_code
    text = client.get("/metrics").text

    assert status in (404, 405)
    unmatched = f'http_response_status_code="{status}",http_route="<unmatched>"'
    assert f'{unmatched},le="+Inf"' in text
    assert path not in text


def test_histograms_count_cumulatively_and_fill_missing_labels() -> None:
    histogram = metrics.Histogram("quarry.test.sizes", unit="By", description="Test sizes.")
    histogram.record(0.0001, {"kind": "a"})
    histogram.record(3.0, {"kind": "a", "extra": 1})
    counter = metrics.Counter("quarry.test.things", description="Test things.")
    counter.add(2, {"kind": "a"})
    text = telemetry.metrics_text().decode()
    assert 'quarry_test_sizes_bytes_bucket{extra="",kind="a",le="0.0001"} 1.0' in text
    assert 'quarry_test_sizes_bytes_bucket{extra="1",kind="a",le="5.0"} 1.0' in text
    assert 'quarry_test_sizes_bytes_bucket{extra="1",kind="a",le="2.5"} 0.0' in text
    assert 'quarry_test_sizes_bytes_sum{extra="",kind="a"} 0.0001' in text
    assert 'quarry_test_things_total{kind="a"} 2.0' in text


def test_an_instrument_at_its_cap_folds_new_label_sets_into_one_overflow_series() -> None:
    histogram = metrics.Histogram("quarry.test.capped", unit="s", max_series=2)
    counter = metrics.Counter("quarry.test.capped.things", max_series=2)
    for n in range(5):
        histogram.record(0.5, {"user": f"u{n}"})
        counter.add(1, {"user": f"u{n}"})
    counter.add(1, {"user": "u0"})  # a known label set keeps its series
    text = telemetry.metrics_text().decode()

    assert 'quarry_test_capped_seconds_count{otel_metric_overflow="",user="u1"} 1.0' in text
    assert 'quarry_test_capped_seconds_count{otel_metric_overflow="true",user=""} 3.0' in text
    assert 'quarry_test_capped_things_total{otel_metric_overflow="",user="u0"} 2.0' in text
    assert 'quarry_test_capped_things_total{otel_metric_overflow="true",user=""} 3.0' in text
    assert "u2" not in text
    overflow = "quarry_metric_series_overflow_total"
    assert f'{overflow}{{instrument="quarry_test_capped_seconds"}} 3.0' in text
    assert f'{overflow}{{instrument="quarry_test_capped_things"}} 3.0' in text


def test_the_process_cap_applies_to_instruments_without_their_own() -> None:
    gauge = metrics.UpDownCounter("quarry.test.process.capped")
    metrics.limit_series(1)
    try:
        gauge.add(1, {"k": "a"})
        gauge.add(1, {"k": "b"})
        gauge.add(-1, {"k": "b"})
    finally:
        metrics.limit_series(metrics.DEFAULT_MAX_SERIES)
    text = telemetry.metrics_text().decode()

    assert 'quarry_test_process_capped{k="a",otel_metric_overflow=""} 1.0' in text
    assert 'quarry_test_process_capped{k="",otel_metric_overflow="true"} 0.0' in text
    overflow = 'quarry_metric_series_overflow_total{instrument="quarry_test_process_capped"}'
    assert f"{overflow} 2.0" in text


def test_every_answer_carries_a_request_id_the_caller_gave_or_a_fresh_one(
    client: TestClient[Any],
) -> None:
    given = client.post("/v1/echo/a", headers={"x-request-id": "mine-1"})
    fresh = [client.post("/v1/echo/a").headers["x-request-id"] for _ in range(3)]
    unmatched = client.get("/no/such/thing")
    refused = client.post("/v1/echo/a", headers={"quarry-deadline-ms": "soon"})

    assert given.headers["x-request-id"] == "mine-1"
    assert len(set(fresh)) == 3
    assert all(len(r) == 32 and int(r, 16) for r in fresh)
    assert unmatched.status_code == 404
    assert len(unmatched.headers["x-request-id"]) == 32
    assert refused.status_code == 400
    assert refused.json()["details"]["header"] == "quarry-deadline-ms"
    assert "x-request-id" in refused.headers


def test_forked_processes_never_share_ids() -> None:
    import os

    from app.kernel.ids import unique_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes its first id and leaves at once
        os.write(write, unique_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    mine = unique_id()
    assert len(child) == len(mine) == 32
    assert child != mine
