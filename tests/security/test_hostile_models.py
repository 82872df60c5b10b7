"""Hostile model files: a model is data, never a path to the host, and never takes the server down.

Models that keep tensors in external files (wherever they hide them) and models with absurd static
dimensions are refused at upload with a 400; models that reach inference anyway (written straight
into the store, past the registry's checks) or that fail to load or warm up answer 503
``model_load_failed`` with the reason in their status. The server keeps serving other models, and
the bytes of the file a hostile model points at never appear in any answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from app.bootstrap import Platform, create_app
from app.kernel.auth import KeyStore
from app.kernel.settings import Settings
from app.modules.inference import loading, runtime
from app.modules.registry import service as registry_service
from app.modules.registry.signature import read_signature
from contracts.common import InvalidInput
from tests.fakes.models import linear_onnx

SECRET_PATH = ".hid/secret.txt"
ROWS = [[1.0, 2.0, 3.0]]


# --- hostile models, built with onnx.helper ---------------------------------------------------


def external(name: str, location: str, size: int, *, entries: bool = True) -> TensorProto:
    """A UINT8 tensor of ``size`` elements whose data ONNX Runtime would read from ``location``."""
    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[size])
    tensor.data_location = TensorProto.EXTERNAL
    if entries:
        for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
            tensor.external_data.add(key=key, value=value)
    return tensor


def _model(
    graph: onnx.GraphProto, functions: list[onnx.FunctionProto] | None = None
) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", 17)]
    if functions:
        opsets.append(helper.make_opsetid("local", 1))
    model = helper.make_model(graph, opset_imports=opsets, functions=functions or [])
    model.ir_version = 8
    return model


def _uint8(name: str, size: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.UINT8, [size])


def if_branch_constant(location: str, size: int) -> bytes:
    """The reported one: an ``If`` whose then-branch is a ``Constant`` with external data."""
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=external("s", location, size))],
        "then",
        [],
        [_uint8("c", size)],
    )
    zeros = helper.make_tensor("z", TensorProto.UINT8, [size], [0] * size)
    other = helper.make_graph(
        [helper.make_node("Constant", [], ["d"], value=zeros)], "else", [], [_uint8("d", size)]
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)],
        "main",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [_uint8("y", size)],
    )
    return _model(graph).SerializeToString()


def loop_body_initializer(location: str, size: int) -> bytes:
    """A ``Loop`` whose body graph holds an initializer with external data."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["w"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _uint8("scan", size)],
        initializer=[external("w", location, size)],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "go"], ["y"], body=body)],
        "main",
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
            helper.make_tensor_value_info("go", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["n", size])],
    )
    return _model(graph).SerializeToString()


def scan_body_initializer(location: str, size: int) -> bytes:
    """A ``Scan`` whose body adds an initializer with external data to each row."""
    body = helper.make_graph(
        [helper.make_node("Add", ["row", "w"], ["out"])],
        "body",
        [_uint8("row", size)],
        [_uint8("out", size)],
        initializer=[external("w", location, size)],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["x"], ["y"], body=body, num_scan_inputs=1)],
        "main",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["rows", size])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["rows", size])],
    )
    return _model(graph).SerializeToString()


def function_body_constant(location: str, size: int) -> bytes:
    """A model-local function whose body is a ``Constant`` with external data."""
    function = helper.make_function(
        "local",
        "Leak",
        ["x"],
        ["y"],
        [
            helper.make_node("Constant", [], ["c"], value=external("s", location, size)),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("Leak", ["x"], ["y"], domain="local")],
        "main",
        [_uint8("x", size)],
        [_uint8("y", size)],
    )
    return _model(graph, [function]).SerializeToString()


def sparse_initializer(location: str, size: int) -> bytes:
    """A sparse initializer whose values are external data."""
    indices = helper.make_tensor("w_idx", TensorProto.INT64, [size], list(range(size)))
    sparse = helper.make_sparse_tensor(external("w", location, size), indices, [size])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "main",
        [_uint8("x", size)],
        [_uint8("y", size)],
    )
    graph.sparse_initializer.append(sparse)
    return _model(graph).SerializeToString()


def flagged_only(location: str, size: int) -> bytes:
    """A top-level initializer marked ``EXTERNAL`` without any external_data entries."""
    del location
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "main",
        [_uint8("x", size)],
        [_uint8("y", size)],
        initializer=[external("w", "", size, entries=False)],
    )
    return _model(graph).SerializeToString()


def entries_only(location: str, size: int) -> bytes:
    """A node attribute tensor with external_data entries but the default data location."""
    tensor = external("s", location, size)
    tensor.data_location = TensorProto.DEFAULT
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=tensor)], "main", [], [_uint8("y", size)]
    )
    graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]))
    return _model(graph).SerializeToString()


HOSTILE: dict[str, Callable[[str, int], bytes]] = {
    "if-branch-constant": if_branch_constant,
    "loop-body-initializer": loop_body_initializer,
    "scan-body-initializer": scan_body_initializer,
    "function-body-constant": function_body_constant,
    "sparse-initializer": sparse_initializer,
    "external-flag-only": flagged_only,
    "external-entries-only": entries_only,
}


def static_input(dims: list[int]) -> bytes:
    """``y = x + 1`` over an FP32 input of static shape ``dims``."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    return _model(graph).SerializeToString()


def huge_at_run_time() -> bytes:
    """A valid model with small inputs and outputs whose first run asks for 4 PiB of memory
    (more than any address space, so the allocation fails at once whatever the overcommit)."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [2**50])
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"]),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=1),
            helper.make_node("Add", ["x", "total"], ["y"]),
        ],
        "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[shape],
    )
    return _model(graph).SerializeToString()


# --- the server --------------------------------------------------------------------------------


@dataclass
class Server:
    """The real app with auth on, a trainer key and a predicting key, and every answer seen."""

    http: httpx.AsyncClient
    trainer: dict[str, str]
    user: dict[str, str]
    secrets: list[bytes]
    answers: list[httpx.Response] = field(default_factory=list)

    async def upload(self, name: str, data: bytes) -> httpx.Response:
        answer = await self.http.post(
            f"/v1/registry/models/{name}/versions",
            files={"file": ("model.onnx", data, "application/octet-stream")},
            headers=self.trainer,
        )
        return self._seen(answer)

    async def predict(self, ref: str, inputs: dict[str, Any]) -> httpx.Response:
        answer = await self.http.post(
            f"/v1/predict/{ref}", json={"inputs": inputs}, headers=self.user
        )
        return self._seen(answer)

    async def infer(self, model: str, inputs: list[dict[str, Any]]) -> httpx.Response:
        answer = await self.http.post(
            f"/v2/models/{model}/infer", json={"inputs": inputs}, headers=self.user
        )
        return self._seen(answer)

    async def get(self, path: str) -> httpx.Response:
        return self._seen(await self.http.get(path, headers=self.user))

    async def post(self, path: str) -> httpx.Response:
        return self._seen(await self.http.post(path, headers=self.user))

    async def still_serves(self) -> None:
        answer = await self.predict("good:1", {"x": ROWS})
        assert answer.status_code == 200, answer.text

    def _seen(self, answer: httpx.Response) -> httpx.Response:
        self.answers.append(answer)
        return answer

    def leaked(self) -> list[str]:
        """Answers that carry the bytes of a file a hostile model points at."""
        return [
            f"{a.request.method} {a.request.url.path}"
            for a in self.answers
            for secret in self.secrets
            if secret in a.content or secret.hex().encode() in a.content
        ]


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    # the working directory holds the secret a relative external-data location would resolve to
    workdir = tmp_path / "cwd"
    (workdir / ".hid").mkdir(parents=True)
    secret = b"quarry-secret-" + secrets.token_hex(8).encode()
    (workdir / SECRET_PATH).write_bytes(secret)
    monkeypatch.chdir(workdir)
    settings = Settings(data_dir=tmp_path / "data", auth="on", events_poll_s=0.05)
    keys = KeyStore(settings.keys_file)
    _, trainer = keys.create("trainer", ["train"])
    _, user = keys.create("user", ["predict", "read"])
    async with Platform(settings) as platform:
        transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
        async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
            served = Server(
                http=http,
                trainer={"authorization": f"Bearer {trainer}"},
                user={"authorization": f"Bearer {user}"},
                secrets=[
                    secret,
                    *re.findall(rb'hash = "([^"]+)"', settings.keys_file.read_bytes()),
                ],
            )
            assert (await served.upload("good", linear_onnx())).status_code == 201
            yield served
            assert served.leaked() == []


def assert_error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code
    return body


# --- refused at upload -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HOSTILE)
async def test_external_data_anywhere_in_a_model_is_refused_at_upload(
    server: Server, kind: str
) -> None:
    answer = await server.upload("hostile", HOSTILE[kind](SECRET_PATH, 30))

    body = assert_error(answer, 400, "invalid_input")
    assert body["details"]["reason"] == "external_data"
    assert "external files" in body["error"]
    assert (await server.get("/v1/registry/models/hostile")).status_code == 404
    await server.still_serves()


async def test_a_model_pointing_at_the_api_keys_file_is_refused(
    server: Server, tmp_path: Path
) -> None:
    keys_file = str(tmp_path / "data" / "api_keys.toml")

    answer = await server.upload("hostile", if_branch_constant(keys_file, 32))

    assert_error(answer, 400, "invalid_input")
    await server.still_serves()


@pytest.mark.parametrize(
    "data",
    [static_input([2**40]), static_input([1, 2**28, 2])],
    ids=["2**40", "2 GiB in three dims"],
)
async def test_static_dimensions_over_the_tensor_limit_are_refused_at_upload(
    server: Server, data: bytes
) -> None:
    answer = await server.upload("huge", data)

    body = assert_error(answer, 400, "invalid_input")
    assert body["details"]["reason"] == "tensor_too_large"
    assert "QUARRY_MAX_TENSOR_BYTES" in body["error"]
    await server.still_serves()


def test_the_tensor_limit_counts_dynamic_dimensions_as_one() -> None:
    assert read_signature(static_input([-1, 1000]), max_tensor_bytes=4000).inputs
    with pytest.raises(InvalidInput, match="4004 bytes"):
        read_signature(static_input([1001]), max_tensor_bytes=4000)


# --- refused again at load, past the registry ---------------------------------------------------


def test_the_hostile_model_really_reads_the_file_when_nothing_guards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain ONNX Runtime resolves the location against the working directory: the threat."""
    (tmp_path / ".hid").mkdir()
    (tmp_path / SECRET_PATH).write_bytes(b"0123456789")
    monkeypatch.chdir(tmp_path)
    session = onnxruntime.InferenceSession(
        if_branch_constant(SECRET_PATH, 10), providers=["CPUExecutionProvider"]
    )
    assert bytes(session.run(None, {"cond": np.array(True)})[0]) == b"0123456789"


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("guard", ["check", "session options"])
def test_the_loader_refuses_external_data_without_reading_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, guard: str
) -> None:
    secret = b"quarry-secret-" + secrets.token_hex(8).encode()
    (tmp_path / ".hid").mkdir()
    (tmp_path / SECRET_PATH).write_bytes(secret)
    monkeypatch.chdir(tmp_path)
    if guard == "session options":  # the check is gone: ONNX Runtime must still refuse
        monkeypatch.setattr(runtime, "_refuse_external_data", lambda *_: None)
    data = HOSTILE[kind](SECRET_PATH, len(secret))

    with pytest.raises(InvalidInput) as caught:
        runtime.load_model(
            "m",
            1,
            data,
            read_signature(linear_onnx()),
            providers=[runtime.CPU],
            intra_op_threads=1,
            sha256=hashlib.sha256(data).hexdigest(),
        )
    assert secret not in json.dumps(caught.value.to_dict()).encode()
    if guard == "check":
        assert caught.value.details["reason"] == "external_data"


def _bypass_registry_checks(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    """Store the next uploads as they are, with the signature ``data`` declares when it has one
    (whatever its size), else the signature of a linear model."""
    try:
        signature = read_signature(data, max_tensor_bytes=2**62)
    except InvalidInput:
        signature = read_signature(linear_onnx())
    monkeypatch.setattr(registry_service, "read_signature", lambda *_, **__: signature)


@pytest.mark.parametrize("kind", ["if-branch-constant", "function-body-constant"])
async def test_a_stored_hostile_model_fails_to_load_with_a_503_and_leaks_nothing(
    server: Server, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    _bypass_registry_checks(monkeypatch, b"")
    assert (await server.upload("hostile", HOSTILE[kind](SECRET_PATH, 30))).status_code == 201

    predicted = await server.predict("hostile:1", {"x": ROWS})
    inferred = await server.infer(
        "hostile", [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": ROWS[0]}]
    )
    status = await server.get("/v1/inference/models/hostile:1")

    for answer in (predicted, inferred):
        body = assert_error(answer, 503, "model_load_failed")
        assert "external files" in body["error"]
        assert int(answer.headers["retry-after"]) >= 1
    assert status.status_code == 200
    assert status.json()["state"] == "failed"
    assert "external files" in status.json()["error"]
    assert status.json()["retry_at"]
    await server.still_serves()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (static_input([1, 2**40]), "QUARRY_MAX_TENSOR_BYTES"),
        (linear_onnx()[:-20], "ONNX Runtime cannot load"),
        (b"\x08\x07garbage that is no protobuf at all", "ONNX Runtime cannot load"),
    ],
    ids=["2**40 static input", "truncated", "garbage"],
)
async def test_a_stored_model_that_cannot_load_or_warm_up_answers_503(
    server: Server, monkeypatch: pytest.MonkeyPatch, data: bytes, needle: str
) -> None:
    _bypass_registry_checks(monkeypatch, data)
    assert (await server.upload("broken", data)).status_code == 201

    body = assert_error(await server.predict("broken", {"x": ROWS}), 503, "model_load_failed")
    status = (await server.get("/v1/inference/models/broken")).json()

    assert needle in body["error"]
    assert (status["state"], needle in status["error"]) == ("failed", True)
    await server.still_serves()


async def test_a_model_that_runs_out_of_memory_at_warm_up_fails_cleanly(server: Server) -> None:
    assert (await server.upload("greedy", huge_at_run_time())).status_code == 201

    body = assert_error(await server.predict("greedy", {"x": [[1.0]]}), 503, "model_load_failed")

    assert "allocate" in body["error"]
    assert (await server.get("/v1/inference/models/greedy")).json()["state"] == "failed"
    await server.still_serves()


# --- the failed state: retried after a backoff or on an explicit load ------------------------


async def test_a_failed_load_is_not_retried_by_traffic_until_its_backoff_passes(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []
    real = loading.load_model

    def flaky(name: str, *args: Any, **kwargs: Any) -> runtime.LoadedModel:
        attempts.append(name)
        if len(attempts) == 1:
            raise MemoryError("no memory left for this one")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(loading, "load_model", flaky)

    first = await server.predict("good:1", {"x": ROWS})
    again = await server.predict("good:1", {"x": ROWS})
    probe = await server.get("/v2/models/good/versions/1/ready")
    failed = (await server.get("/v1/inference/models/good:1")).json()
    tried_by_traffic = len(attempts)
    reloaded = (await server.post("/v1/inference/models/good:1/load")).json()
    after = await server.predict("good:1", {"x": ROWS})

    assert "MemoryError: no memory left" in assert_error(first, 503, "model_load_failed")["error"]
    assert assert_error(again, 503, "model_load_failed")["details"]["failures"] == 1
    assert probe.status_code == 400
    assert (failed["state"], failed["retry_at"] is not None) == ("failed", True)
    assert tried_by_traffic == 1
    assert (reloaded["state"], reloaded["error"], reloaded["retry_at"]) == ("ready", None, None)
    assert after.status_code == 200


async def test_traffic_tries_a_failed_load_again_once_the_backoff_passed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading, "RETRY_FIRST_S", 0.0)
    real = loading.load_model
    attempts: list[str] = []

    def flaky(name: str, *args: Any, **kwargs: Any) -> runtime.LoadedModel:
        attempts.append(name)
        if len(attempts) == 1:
            raise MemoryError
        return real(name, *args, **kwargs)

    monkeypatch.setattr(loading, "load_model", flaky)

    first = await server.predict("good:1", {"x": ROWS})
    second = await server.predict("good:1", {"x": ROWS})

    assert assert_error(first, 503, "model_load_failed")["error"].endswith(": MemoryError")
    assert second.status_code == 200
    assert (await server.get("/v1/inference/models/good:1")).json()["state"] == "ready"
