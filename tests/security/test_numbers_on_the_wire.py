"""Numbers a client sends never become a 500 or a silent infinity.

Regressions: an ``Inference-Header-Content-Length`` of 5,000 digits (past Python's int digit
limit), a 5,000-digit OIP version segment, and ``/v1/predict`` turning ``1e39`` into FP32
infinity and answering 200 with ``null`` outputs while ``/v2`` refused the same input.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest

from app.bootstrap import Platform, create_app
from app.kernel.numbers import INT32_MAX, parse_int
from app.kernel.settings import Settings
from contracts.common import InvalidInput
from contracts.registry import RegisterVersion
from tests.fakes.models import linear_onnx

HEADER = "Inference-Header-Content-Length"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with Platform(Settings(data_dir=tmp_path)) as platform:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="lin", artifact=linear_onnx()))
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield http


def _error(answer: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code
    assert "Traceback" not in answer.text
    return body


async def test_a_header_length_of_5000_digits_is_a_400(client: httpx.AsyncClient) -> None:
    header = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    answer = await client.post(
        "/v2/models/lin/infer",
        content=json.dumps(header).encode(),
        headers={HEADER: "9" * 5000, "content-type": "application/octet-stream"},
    )

    body = _error(answer, 400, "invalid_input")
    assert HEADER in str(body["error"])


async def test_a_version_segment_of_5000_digits_is_a_400(client: httpx.AsyncClient) -> None:
    answer = await client.get(f"/v2/models/lin/versions/{'1' * 5000}")

    _error(answer, 400, "invalid_input")


async def test_a_version_past_32_bits_is_a_400(client: httpx.AsyncClient) -> None:
    answer = await client.get(f"/v2/models/lin/versions/{INT32_MAX + 1}")

    _error(answer, 400, "invalid_input")


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38])
async def test_v1_refuses_values_that_overflow_fp32(
    client: httpx.AsyncClient, value: float
) -> None:
    answer = await client.post("/v1/predict/lin:1", json={"inputs": {"x": [[value, 1.0, 2.0]]}})

    body = _error(answer, 422, "unprocessable")
    assert "FP32" in str(body["error"])


@pytest.mark.parametrize("row", [[math.nan, 1e39, 1.0], [1e39, math.inf, 1.0]])
async def test_v1_refuses_an_overflowing_value_beside_nan_or_infinity(
    client: httpx.AsyncClient, row: list[float]
) -> None:
    answer = await client.post(
        "/v1/predict/lin:1",
        content=msgspec.msgpack.encode({"inputs": {"x": [row]}}),
        headers={"content-type": "application/x-msgpack"},
    )

    assert answer.status_code == 422, answer.text
    assert "outside the range of FP32" in answer.json()["error"]


async def test_v1_passes_nan_and_infinity_through_unchanged(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/v1/predict/lin:1",
        content=msgspec.msgpack.encode({"inputs": {"x": [[math.nan, math.inf, 1.0]]}}),
        headers={"content-type": "application/x-msgpack"},
    )

    assert answer.status_code == 200, answer.text


async def test_v1_and_v2_agree_on_an_overflowing_value(client: httpx.AsyncClient) -> None:
    v2 = await client.post(
        "/v2/models/lin/infer",
        json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1e39, 1, 2]}]},
    )
    v1 = await client.post("/v1/predict/lin:1", json={"inputs": {"x": [[1e39, 1.0, 2.0]]}})

    assert v2.status_code >= 400
    assert v1.status_code >= 400
    assert "outside the range of FP32" in v1.json()["error"]
    assert "outside the range of FP32" in v2.json()["error"]


async def test_values_within_fp32_still_predict(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/predict/lin:1", json={"inputs": {"x": [[1e30, -1e30, 0.5]]}})

    assert answer.status_code == 200, answer.text
    assert all(isinstance(v, float) for v in answer.json()["outputs"]["y"][0])


@pytest.mark.parametrize(
    "text", ["", "-1", "1e3", "0x10", "\uff11\uff12", "9" * 20, "9" * 5000, str(INT32_MAX + 1)]
)
def test_parse_int_refuses_what_does_not_fit(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_int(text, what="count", maximum=INT32_MAX)

    assert caught.value.details["maximum"] == INT32_MAX
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(("text", "value"), [("0", 0), (" 42 ", 42), (str(INT32_MAX), INT32_MAX)])
def test_parse_int_reads_what_fits(text: str, value: int) -> None:
    assert parse_int(text, what="count", maximum=INT32_MAX) == value
