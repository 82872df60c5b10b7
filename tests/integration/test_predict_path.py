"""The predict path's shape: one contract call per HTTP prediction, the sticky header carried in
the request, and no context variable carrying results inside the inference module."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from app.kernel.http.errors import exception_handlers
from app.kernel.settings import Settings
from app.modules.inference.api import routes
from tests.fakes.inference import FakeInferenceService

INFERENCE = Path(__file__).parents[2] / "app" / "modules" / "inference"


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, FakeInferenceService]]:
    fake = FakeInferenceService()  # it has no get_deployment: a lookup would fail the request
    app = Litestar(
        route_handlers=routes(fake, Settings()),  # type: ignore[arg-type]
        exception_handlers=exception_handlers,
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        yield http, fake


async def test_a_prediction_is_one_contract_call_carrying_the_headers(
    client: tuple[httpx.AsyncClient, FakeInferenceService],
) -> None:
    http, fake = client

    answer = await http.post(
        "/v1/predict/text",
        json={"inputs": {"t": ["a", "b"]}},
        headers={"X-User": "alice", "Authorization": "Bearer secret-key"},
    )

    assert answer.status_code == 200, answer.text
    [request] = fake.predictions
    assert request.sticky["x-user"] == "alice"
    assert request.sticky["authorization"] == hashlib.sha256(b"Bearer secret-key").hexdigest()
    assert "secret-key" not in "".join(request.sticky.values())
    assert request.sticky_key is None


async def test_a_version_or_alias_reference_carries_no_headers(
    client: tuple[httpx.AsyncClient, FakeInferenceService],
) -> None:
    http, fake = client

    answer = await http.post(
        "/v1/predict/text:1",
        json={"inputs": {"t": ["a", "b"]}},
        headers={"x-user": "alice"},
    )

    assert answer.status_code == 200, answer.text
    assert fake.predictions[0].sticky == {}  # only a bare name can be a deployment's


def test_no_context_variable_carries_results_in_the_inference_module() -> None:
    users = [
        f"{path.name}:{node.lineno}"
        for path in sorted(INFERENCE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Name | ast.Attribute)
        and (node.id if isinstance(node, ast.Name) else node.attr) == "ContextVar"
    ]

    assert users == []
