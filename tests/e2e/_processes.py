"""What the tests of the platform across real processes share: a trace receiver, polling another
process's progress, and the feature data a training job reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Receiver:
    """An OTLP/HTTP trace receiver: keeps ``(service name, trace id, span name)`` of every span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    service = next(
                        (
                            a.value.string_value
                            for a in resource_spans.resource.attributes
                            if a.key == "service.name"
                        ),
                        "",
                    )
                    for scope in resource_spans.scope_spans:
                        for span in scope.spans:
                            receiver.spans.append((service, span.trace_id.hex(), span.name))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def services_in(self, trace_id: str) -> set[str]:
        return {service for service, trace, _ in list(self.spans) if trace == trace_id}


def eventually(check: Callable[[], Any], what: str, within: float = 120) -> Any:
    """Poll ``check`` until it answers something truthy (another process is working)."""
    deadline = time.monotonic() + within
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)  # polling other processes' progress, with a deadline


def seed(client: httpx.Client, view: str, entity: str, count: int) -> list[dict[str, Any]]:
    """A feature view ``view`` of ``count`` entities, a push of its rows an hour ago, and a
    feature service ``churn`` on it; answers entity rows as of now, which a training job reads
    point-in-time."""
    spec = {
        "entities": [entity],
        "features": [
            {"name": "x1", "dtype": "float"},
            {"name": "x2", "dtype": "float"},
            {"name": "churned", "dtype": "int"},
        ],
    }
    assert client.put(f"/v1/features/views/{view}", json=spec).status_code == 200
    x = np.random.default_rng(5).normal(size=(count, 2))
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    rows = [
        {
            entity: i,
            "event_timestamp": when,
            "x1": float(x[i, 0]),
            "x2": float(x[i, 1]),
            "churned": int(x[i, 0] - x[i, 1] > 0),
        }
        for i in range(count)
    ]
    pushed = client.post(f"/v1/features/views/{view}/rows", json={"rows": rows})
    assert pushed.status_code == 200, pushed.text
    service = {"features": [f"{view}:x1", f"{view}:x2"], "transforms": []}
    assert client.put("/v1/features/services/churn", json=service).status_code == 200
    now = datetime.now(UTC).isoformat()
    return [{entity: i, "event_timestamp": now} for i in range(count)]
