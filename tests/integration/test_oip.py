"""The Open Inference Protocol routes, spoken to by the real ``tritonclient`` and by raw HTTP.

The routes run over :class:`~tests.fakes.inference.FakeInferenceService` in a litestar app with
the kernel's error handlers, served by uvicorn on a free port in a background thread.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
import uvicorn
from litestar import Litestar
from tritonclient.utils import InferenceServerException

from app.kernel.http.errors import exception_handlers
from app.kernel.settings import Settings
from app.modules.inference.oip import oip_routes
from contracts.inference import LoadModel
from tests.fakes.inference import FakeInferenceService
from tests.fakes.server import free_port

MAX_BODY = 1 << 20
HEADER = "Inference-Header-Content-Length"


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> FakeInferenceService:
    return FakeInferenceService()


@pytest.fixture(scope="module")
def app(fake: FakeInferenceService) -> Litestar:
    settings = Settings(max_body_bytes=MAX_BODY)
    return Litestar(
        route_handlers=oip_routes(fake, settings),
        exception_handlers=exception_handlers,
        request_max_body_size=settings.max_body_bytes,
    )


@pytest.fixture(scope="module")
def url(app: Litestar) -> Iterator[str]:
    """``host:port`` of a uvicorn server running ``app`` in a background thread."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="oip-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)  # polling a condition with a deadline, not standing in for one
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(autouse=True)
def _fresh(fake: FakeInferenceService) -> None:
    fake.reset()


@pytest.fixture
def client(url: str) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(url=url)
    try:
        yield triton_client
    finally:
        triton_client.close()


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{url}") as http_client:
        yield http_client


def numbers_input(x: np.ndarray[Any, Any], *, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    return tensor.set_data_from_numpy(x, binary_data=binary)


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    return raw + b"".join(chunks), {HEADER: str(len(raw))}


# --- tritonclient ---------------------------------------------------------------------------


def test_server_is_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata_names_quarry_and_binary_tensors(
    client: triton.InferenceServerClient,
) -> None:
    meta = client.get_server_metadata()

    assert meta["name"] == "quarry"
    assert meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_describes_the_resolved_version(
    client: triton.InferenceServerClient, fake: FakeInferenceService
) -> None:
    latest = client.get_model_metadata("id")
    first = client.get_model_metadata("id", model_version="1")

    assert latest == {
        "name": "id",
        "versions": ["2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "s", "datatype": "FP32", "shape": [-1]},
        ],
    }
    assert first["versions"] == ["1"]
    assert fake.loads == [LoadModel(model="id", wait=False), LoadModel(model="id:1", wait=False)]


def test_model_metadata_of_a_cold_model_waits_for_the_load(
    client: triton.InferenceServerClient, fake: FakeInferenceService
) -> None:
    meta = client.get_model_metadata("cold")

    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert fake.loads == [LoadModel(model="cold", wait=False), LoadModel(model="cold", wait=True)]


def test_model_metadata_of_a_model_that_fails_to_load_answers_503(http: httpx.Client) -> None:
    answer = http.get("/v2/models/broken")

    assert answer.status_code == 503
    assert answer.json()["error"] == (
        "model 'broken' version 1 is not ready (failed: the artifact is not ONNX)"
    )


def test_model_metadata_of_an_unknown_model_raises_our_message(
    client: triton.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException, match="model 'nope' does not exist") as caught:
        client.get_model_metadata("nope")

    assert caught.value.status() == "404"


def test_asking_whether_a_model_is_ready_starts_loading_it(
    client: triton.InferenceServerClient, fake: FakeInferenceService
) -> None:
    assert not client.is_model_ready("cold")
    assert client.is_model_ready("cold")
    assert client.is_model_ready("id", model_version="1")
    assert not client.is_model_ready("nope")
    assert fake.loads[:3] == [
        LoadModel(model="cold", wait=False),
        LoadModel(model="cold", wait=False),
        LoadModel(model="id:1", wait=False),
    ]


def test_a_model_that_is_not_ready_answers_400_saying_why(http: httpx.Client) -> None:
    answer = http.get("/v2/models/broken/versions/1/ready")

    assert answer.status_code == 400
    assert answer.json() == {
        "error": "model 'broken' version 1 is not ready (failed: the artifact is not ONNX)",
        "code": "not_ready",
        "details": {"model": "broken", "version": 1, "state": "failed"},
    }


@pytest.mark.parametrize(("binary_in", "binary_out"), [(True, True), (False, False), (True, False)])
def test_infer_round_trips_numbers(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool
) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    outputs = [
        triton.InferRequestedOutput("s", binary_data=binary_out),
        triton.InferRequestedOutput("y", binary_data=binary_out),
    ]

    result = client.infer(
        "id", [numbers_input(x, binary=binary_in)], outputs=outputs, request_id="r-1"
    )

    np.testing.assert_array_equal(result.as_numpy("y"), x)
    np.testing.assert_allclose(result.as_numpy("s"), x.sum(axis=1), rtol=1e-6)
    answer = result.get_response()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("id", "2", "r-1")
    assert [o["name"] for o in answer["outputs"]] == ["s", "y"]


def test_infer_mixes_binary_and_json_outputs(client: triton.InferenceServerClient) -> None:
    x = np.ones((2, 4), dtype=np.float32)
    outputs = [
        triton.InferRequestedOutput("y", binary_data=True),
        triton.InferRequestedOutput("s", binary_data=False),
    ]

    result = client.infer("id", [numbers_input(x, binary=True)], outputs=outputs)

    np.testing.assert_array_equal(result.as_numpy("y"), x)
    assert result.get_output("s")["data"] == [4.0, 4.0]


def test_infer_without_requested_outputs_answers_all_of_them(
    client: triton.InferenceServerClient, fake: FakeInferenceService
) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)

    result = client.infer("id", [numbers_input(x, binary=False)])

    np.testing.assert_array_equal(result.as_numpy("y"), x)
    np.testing.assert_array_equal(result.as_numpy("s"), [6, 22])
    assert fake.predictions[-1].outputs == []


def test_infer_on_a_version_path_runs_that_version(
    client: triton.InferenceServerClient, fake: FakeInferenceService
) -> None:
    x = np.zeros((1, 4), dtype=np.float32)

    result = client.infer("id", [numbers_input(x, binary=True)], model_version="1")

    assert result.get_response()["model_version"] == "1"
    assert fake.predictions[-1].model == "id:1"


@pytest.mark.parametrize("binary", [True, False])
def test_infer_round_trips_bytes_tensors(
    client: triton.InferenceServerClient, binary: bool
) -> None:
    text = np.array(["ab", "héllo", ""], dtype=object)
    tensor = triton.InferInput("t", [3], "BYTES").set_data_from_numpy(text, binary_data=binary)

    result = client.infer(
        "text", [tensor], outputs=[triton.InferRequestedOutput("u", binary_data=binary)]
    )

    got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("u")]
    assert got == ["AB", "HéLLO", ""]


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_infer_accepts_compressed_requests(
    client: triton.InferenceServerClient, algorithm: str
) -> None:
    x = np.full((2, 4), 3, dtype=np.float32)

    result = client.infer(
        "id", [numbers_input(x, binary=True)], request_compression_algorithm=algorithm
    )

    np.testing.assert_array_equal(result.as_numpy("y"), x)


def test_infer_errors_reach_tritonclient_with_our_message(
    client: triton.InferenceServerClient,
) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    wrong = triton.InferInput("x", [1, 4], "INT32").set_data_from_numpy(x.astype(np.int32))

    with pytest.raises(InferenceServerException, match="model 'nope' does not exist") as missing:
        client.infer("nope", [numbers_input(x, binary=True)])
    with pytest.raises(InferenceServerException, match="input 'x' must be FP32") as mismatch:
        client.infer("id", [wrong])

    assert (missing.value.status(), mismatch.value.status()) == ("404", "422")


# --- raw HTTP -------------------------------------------------------------------------------


def test_a_large_binary_request_round_trips_bit_for_bit(http: httpx.Client) -> None:
    x = np.random.default_rng(1).standard_normal((1000, 32)).astype(np.float32)
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": [1000, 32],
                "datatype": "FP32",
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    body, headers = binary_body(header, x.tobytes())

    answer = http.post("/v2/models/echo/infer", content=body, headers=headers)

    assert answer.status_code == 200, answer.text
    split = int(answer.headers[HEADER])
    meta = json.loads(answer.content[:split])
    assert meta["outputs"] == [
        {
            "name": "y",
            "datatype": "FP32",
            "shape": [1000, 32],
            "parameters": {"binary_data_size": x.nbytes},
        }
    ]
    assert answer.content[split:] == x.tobytes()


def test_json_data_may_be_flat_or_nested_under_any_content_type(http: httpx.Client) -> None:
    def infer(data: Any) -> Any:
        request = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": data}]}
        answer = http.post(
            "/v2/models/id/infer",
            content=json.dumps(request),
            headers={"content-type": "text/plain"},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["outputs"]

    assert infer(list(range(8))) == infer([[0, 1, 2, 3], [4, 5, 6, 7]])


def _json_input(**fields: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", **fields}]}


def _binary_input(size: int, *, datatype: str = "FP32", shape: Any = (2, 4)) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "x",
                "shape": list(shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": size},
            }
        ]
    }


def _bytes_element(text: bytes) -> bytes:
    return len(text).to_bytes(4, "little") + text


MALFORMED = {
    "data shorter than shape": (
        *binary_body(_json_input(data=[1] * 7)),
        "input 'x' has 7 data elements; shape [2, 4] needs 8",
    ),
    "binary size not shape times dtype": (
        *binary_body(_binary_input(28), bytes(28)),
        "input 'x' binary_data_size is 28 bytes; shape [2, 4] of FP32 needs 32",
    ),
    "binary size past the body": (
        *binary_body(_binary_input(32), bytes(16)),
        "input 'x' declares binary_data_size 32 but only 16 bytes",
    ),
    "bytes left over": (
        *binary_body(_binary_input(32), bytes(40)),
        "8 bytes of binary data follow",
    ),
    "BYTES element count": (
        *binary_body(_binary_input(12, datatype="BYTES", shape=[3]), _bytes_element(b"ab") * 2),
        "input 'x' holds 2 BYTES elements; shape [3] needs 3",
    ),
    "BYTES element past the end": (
        *binary_body(_binary_input(6, datatype="BYTES", shape=[1]), b"\x09\0\0\0ab"),
        "input 'x' BYTES element runs past the end",
    ),
    "header length past the body": (
        b'{"inputs": []}',
        {HEADER: "1000"},
        "Inference-Header-Content-Length is 1000 but the body holds only 14 bytes",
    ),
    "negative header length": (
        b'{"inputs": []}',
        {HEADER: "-1"},
        "invalid Inference-Header-Content-Length '-1': expected an integer from 0 to",
    ),
    "non-integer header length": (
        b'{"inputs": []}',
        {HEADER: "twelve"},
        "invalid Inference-Header-Content-Length 'twelve': expected an integer from 0 to",
    ),
    "unknown datatype": (
        *binary_body(_json_input(datatype="FP8", data=[0] * 8)),
        "input 'x' has unknown datatype 'FP8'",
    ),
    "missing inputs": (*binary_body({"id": "1"}), "missing required field `inputs`"),
    "not JSON": (b"\x00\x01", {}, "invalid inference request"),
    "no data": (*binary_body(_json_input()), "input 'x' has neither 'data' nor"),
    "strings for numbers": (
        *binary_body(_json_input(data=["1"] * 8)),
        "input 'x' has 'data' that is not all numbers",
    ),
    "ragged data": (
        *binary_body(_json_input(data=[[1, 2, 3, 4], [5, 6, 7]])),
        "input 'x' has 'data' that is not a regular",
    ),
    "out of range": (
        *binary_body(_json_input(datatype="INT8", data=[1, 2, 3, 4, 5, 6, 7, 300])),
        "input 'x' has values outside the range of INT8",
    ),
    "BYTES data not strings": (
        *binary_body({"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": [1]}]}),
        "input 't' has BYTES 'data' that is not all strings",
    ),
    "output asked twice": (
        *binary_body({**_json_input(data=[0] * 8), "outputs": [{"name": "y"}, {"name": "y"}]}),
        "output 'y' is requested more than once",
    ),
    "negative dimension": (
        *binary_body(_json_input(shape=[-1, 4], data=[0] * 4)),
        "input 'x' has a negative dimension in shape [-1, 4]",
    ),
}


@pytest.mark.parametrize(("body", "headers", "needle"), MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_tensors_answer_400_naming_the_problem(
    http: httpx.Client, body: bytes, headers: dict[str, str], needle: str
) -> None:
    answer = http.post("/v2/models/id/infer", content=body, headers=headers)

    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["code"] == "invalid_input"
    assert needle in error["error"]


def test_a_compressed_body_over_the_limit_answers_413(http: httpx.Client) -> None:
    bomb = gzip.compress(bytes(MAX_BODY + 1))

    answer = http.post("/v2/models/id/infer", content=bomb, headers={"content-encoding": "gzip"})

    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/models/busy/infer", 503, "unavailable"),
        ("/v2/models/nope/infer", 404, "not_found"),
        ("/v2/models/id/versions/0/infer", 400, "invalid_input"),
        ("/v2/models/id/versions/9/infer", 404, "not_found"),
    ],
)
def test_service_errors_map_through_the_kernel(
    http: httpx.Client, path: str, status: int, code: str
) -> None:
    answer = http.post(path, json=_json_input(data=[0] * 8))

    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code
    if status == 503:
        assert answer.headers["retry-after"] == "2"


def test_routes_carry_their_scopes(app: Litestar) -> None:
    opts = {
        (route.path, method): handler.opt
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        for method in handler.http_methods
    }

    assert opts[("/v2/health/live", "GET")] == {"scope": "read", "open": "probe"}
    assert opts[("/v2/health/ready", "GET")] == {"scope": "read", "open": "probe"}
    assert opts[("/v2", "GET")]["scope"] == "read"
    assert opts[("/v2/models/{m:str}/versions/{v:str}", "GET")]["scope"] == "read"
    assert opts[("/v2/models/{m:str}/ready", "GET")]["scope"] == "read"
    assert opts[("/v2/models/{m:str}/infer", "POST")]["scope"] == "predict"
    assert opts[("/v2/models/{m:str}/versions/{v:str}/infer", "POST")]["scope"] == "predict"


def test_the_routes_are_in_the_openapi_schema(app: Litestar) -> None:
    paths = app.openapi_schema.to_schema()["paths"]

    assert "/v2/models/{m}/versions/{v}/infer" in paths
    assert "/v2/health/ready" in paths


async def test_the_asyncio_client_infers_too(url: str) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inputs = [triton_aio.InferInput("x", [2, 4], "FP32").set_data_from_numpy(x)]
    client = triton_aio.InferenceServerClient(url=url)
    try:
        ready = await client.is_model_ready("id")
        result = await client.infer("id", inputs)
    finally:
        await client.close()

    assert ready
    np.testing.assert_array_equal(result.as_numpy("y"), x)
