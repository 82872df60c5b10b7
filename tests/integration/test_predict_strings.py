"""String outputs read as strings: ``/v1/predict`` answers a ``BYTES`` output's UTF-8 elements as
text in JSON (as OIP does), base64 only for bytes that are not UTF-8, raw bytes in msgpack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from app.modules.inference.http_bodies import array_rows
from contracts.common import Tensor
from contracts.registry import RegisterVersion

LABELS = [["setosa"], ["virginica"], ["été"]]


def echo_strings_onnx() -> bytes:
    """``label = Identity(x)`` on a STRING tensor ``[batch, 1]``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["label"])],
        "echo",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("label", TensorProto.STRING, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with Platform(Settings(data_dir=tmp_path)) as platform:
        registry = platform.client("registry", caller="tests")
        await registry.register_version(RegisterVersion(name="echo", artifact=echo_strings_onnx()))
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            yield http


async def test_string_outputs_are_strings_in_json(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/predict/echo", json={"inputs": {"x": LABELS}})

    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["label"] == LABELS


async def test_string_outputs_are_bytes_in_msgpack(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/v1/predict/echo",
        content=msgspec.msgpack.encode({"inputs": {"x": LABELS}}),
        headers={"content-type": "application/x-msgpack"},
    )

    assert answer.status_code == 200, answer.text
    label = msgspec.msgpack.decode(answer.content)["outputs"]["label"]
    assert label == [[v.encode() for v in row] for row in LABELS]


async def test_batch_results_show_strings_too(client: httpx.AsyncClient) -> None:
    job = await client.post(
        "/v1/inference/batch-jobs", json={"model": "echo", "inputs": {"x": LABELS}}
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    for _ in range(400):  # polling a condition with a deadline
        status = (await client.get(f"/v1/inference/batch-jobs/{job_id}")).json()["status"]
        if status in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert status == "succeeded"
    results = await client.get(f"/v1/inference/batch-jobs/{job_id}/results")
    assert results.json()["outputs"]["label"] == LABELS


def test_bytes_that_are_not_utf8_come_as_base64() -> None:
    array = np.array([[b"\xff\xfe"], [b"ok"]], dtype=object)

    assert array_rows(array) == [["//4="], ["ok"]]


async def test_rows_with_no_columns_are_refused_not_a_server_error(
    client: httpx.AsyncClient,
) -> None:
    predicted = await client.post("/v1/predict/echo", json={"inputs": {"x": [[]]}})
    queued = await client.post(
        "/v1/inference/batch-jobs", json={"model": "echo", "inputs": {"x": [[]]}}
    )

    assert predicted.status_code in (400, 422), predicted.text
    assert predicted.json()["code"] in ("invalid_input", "unprocessable")
    # a batch job is checked against the model when it runs
    assert queued.status_code in (202, 400, 422), queued.text


def test_a_tensor_with_a_zero_length_dimension_round_trips() -> None:
    tensor = Tensor.from_numpy(np.zeros((1, 0), dtype=np.float32))

    assert (tensor.shape, tensor.to_numpy().shape) == ((1, 0), (1, 0))
