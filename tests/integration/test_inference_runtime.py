"""ONNX Runtime sessions from registry bytes: providers, verification, warm-up, LRU, batching."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.kernel.settings import ConfigError
from app.modules.inference import runtime
from app.modules.inference.batching import Batcher
from app.modules.inference.inputs import prepare_inputs
from app.modules.inference.runtime import (
    CPU,
    CUDA,
    LoadedModel,
    ModelCache,
    load_model,
    select_providers,
)
from app.modules.registry.signature import read_signature
from contracts.common import IntegrityError, InvalidInput, Unavailable, UnprocessableInput
from tests.fakes.models import linear_onnx, multi_dtype_onnx, torch_mlp_onnx


def load(data: bytes, *, version: int = 1, providers: list[str] | None = None) -> LoadedModel:
    return load_model(
        "m",
        version,
        data,
        read_signature(data),
        providers=providers or [CPU],
        intra_op_threads=1,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def unchecked_model(*nodes: onnx.NodeProto, inputs: list[onnx.ValueInfoProto]) -> bytes:
    """A model the ONNX checker would refuse, to see what ONNX Runtime makes of it."""
    graph = helper.make_graph(
        list(nodes),
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# --- providers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("available", "loads", "chosen"),
    [
        ([CUDA, CPU], True, [CUDA, CPU]),
        ([CUDA, CPU], False, [CPU]),
        ([CPU], True, [CPU]),
        (["TensorrtExecutionProvider", CUDA, CPU], True, [CUDA, CPU]),
    ],
)
def test_auto_asks_for_cuda_only_where_it_really_loads(
    monkeypatch: pytest.MonkeyPatch, available: list[str], loads: bool, chosen: list[str]
) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
    monkeypatch.setattr(runtime, "_cuda_loads", lambda: loads)
    assert select_providers("auto") == chosen


def test_the_cuda_probe_tells_the_truth_about_this_machine() -> None:
    onnxruntime.set_default_logger_severity(4)  # a missing CUDA library is expected here
    try:
        probe = onnxruntime.InferenceSession(
            linear_onnx(), providers=onnxruntime.get_available_providers()
        )
    finally:
        onnxruntime.set_default_logger_severity(2)
    assert runtime._cuda_loads() == (CUDA in probe.get_providers())


def test_a_provider_list_is_checked_against_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    assert select_providers("cuda, cpu") == [CUDA, CPU]
    assert select_providers(CPU) == [CPU]
    for bad in ("ROCMExecutionProvider", "", "cpu,,cuda"):
        with pytest.raises(ConfigError, match="QUARRY_INFERENCE_PROVIDERS") as caught:
            select_providers(bad)
        assert "CUDAExecutionProvider, CPUExecutionProvider" in str(caught.value)


def test_without_onnxruntime_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"quarryml\[cpu\].*quarryml\[gpu\]"):
        select_providers("auto")


def test_providers_reported_are_the_ones_the_session_uses() -> None:
    model = load(linear_onnx(), providers=select_providers("auto"))
    assert model.providers == tuple(model.session.get_providers())
    assert model.providers[-1] == CPU
    assert load(linear_onnx()).providers == (CPU,)


def test_asking_only_for_cuda_fails_cleanly_where_it_does_not_load() -> None:
    if CUDA not in onnxruntime.get_available_providers():
        pytest.skip("this ONNX Runtime build has no CUDA provider")
    if load(linear_onnx(), providers=[CUDA, CPU]).providers[0] == CUDA:
        assert load(linear_onnx(), providers=[CUDA]).providers[0] == CUDA
        return
    with pytest.raises(Unavailable, match="none of the execution providers CUDAExecutionProvider"):
        load(linear_onnx(), providers=[CUDA])


# --- loading --------------------------------------------------------------------------------


def test_outputs_match_the_numpy_reference() -> None:
    data = linear_onnx(3, 2, seed=7)
    weights = {
        t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer
    }
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    model = load(data)
    outputs = model.run({"x": x})
    assert list(outputs) == ["y"]
    np.testing.assert_allclose(outputs["y"], x @ weights["W"] + weights["b"], rtol=1e-5)
    assert (model.name, model.version, model.size) == ("m", 1, len(data))
    assert model.sha256 == hashlib.sha256(data).hexdigest()


def test_bytes_that_do_not_match_their_hash_are_refused() -> None:
    data = linear_onnx()
    with pytest.raises(IntegrityError, match="not the recorded"):
        load_model(
            "m",
            1,
            data,
            read_signature(data),
            providers=[CPU],
            intra_op_threads=1,
            sha256=hashlib.sha256(b"other").hexdigest(),
        )


def test_corrupt_bytes_are_a_clean_error() -> None:
    data = linear_onnx()[:-7]
    signature = read_signature(linear_onnx())
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(InvalidInput, match="ONNX Runtime cannot load model m:1") as caught:
        load_model("m", 1, data, signature, providers=[CPU], intra_op_threads=1, sha256=sha)
    assert caught.value.details["reason"] in {"InvalidProtobuf", "InvalidGraph", "Fail"}


def test_a_graph_onnx_runtime_cannot_run_is_a_clean_error() -> None:
    data = unchecked_model(
        helper.make_node("NoSuchOp", ["x"], ["y"]),
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
    )
    signature = read_signature(linear_onnx(4, 4))
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(InvalidInput, match="No Op registered for NoSuchOp"):
        load_model("m", 1, data, signature, providers=[CPU], intra_op_threads=1, sha256=sha)


def test_run_errors_carry_onnx_runtimes_message() -> None:
    model = load(linear_onnx())
    with pytest.raises(UnprocessableInput, match="INVALID_ARGUMENT") as caught:
        model.run({"x": np.zeros((1, 3), np.float64)})
    assert caught.value.message.startswith("model m:1 failed to run:")


# --- warm-up --------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [linear_onnx(), multi_dtype_onnx()], ids=["linear", "dtypes"])
def test_warm_up_runs_synthetic_batches(data: bytes) -> None:
    assert load(data).warm_up(2) is True


def test_a_model_that_cannot_take_zeros_still_loads(caplog: pytest.LogCaptureFixture) -> None:
    data = unchecked_model(
        helper.make_node("Reshape", ["x", "shape"], ["y"], allowzero=1),
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
    )
    model = load(data)
    with caplog.at_level(logging.WARNING, logger="quarry.inference"):
        assert model.warm_up(2) is False
    assert "warm-up of m:1 skipped" in caplog.text
    out = model.run({"x": np.ones((2, 4), np.float32), "shape": np.array([4, 2])})
    assert out["y"].shape == (4, 2)


# --- the LRU of loaded models ---------------------------------------------------------------


def test_the_cache_evicts_the_least_recently_used_beyond_its_count() -> None:
    models = {seed: load(linear_onnx(seed=seed), version=seed) for seed in (1, 2, 3)}
    cache = ModelCache(max_models=2, max_bytes=1 << 30)
    assert cache.put(("m", 1), models[1]) == []
    assert cache.put(("m", 2), models[2]) == []
    assert cache.get(("m", 1)) is models[1]
    assert cache.put(("m", 3), models[3]) == [("m", 2)]
    assert [key for key, _ in cache.items()] == [("m", 1), ("m", 3)]
    assert ("m", 2) not in cache
    assert len(cache) == 2


def test_the_cache_evicts_beyond_its_bytes_but_keeps_the_newest() -> None:
    models = {seed: load(linear_onnx(seed=seed), version=seed) for seed in (1, 2, 3)}
    size = models[1].size
    cache = ModelCache(max_models=10, max_bytes=2 * size)
    cache.put(("m", 1), models[1])
    cache.put(("m", 2), models[2])
    assert cache.put(("m", 3), models[3]) == [("m", 1)]
    assert cache.total_bytes == 2 * size
    cache.max_bytes = size // 2
    assert cache.put(("m", 3), models[3]) == [("m", 2)]
    assert [key for key, _ in cache.items()] == [("m", 3)]
    assert cache.remove(("m", 3)) is models[3]
    assert cache.total_bytes == 0


def test_an_evicted_model_still_serves_whoever_holds_it() -> None:
    cache = ModelCache(max_models=1, max_bytes=1 << 30)
    held = load(linear_onnx(seed=1), version=1)
    cache.put(("m", 1), held)
    cache.put(("m", 2), load(linear_onnx(seed=2), version=2))
    assert ("m", 1) not in cache
    assert held.run({"x": np.ones((1, 3), np.float32)})["y"].shape == (1, 2)


# --- batching on a real session -------------------------------------------------------------


async def test_batched_runs_equal_runs_of_each_request_alone() -> None:
    model = load(torch_mlp_onnx())
    batcher = Batcher(model, max_batch_size=64, max_queue_delay_ms=0, max_queue_rows=4096)
    rng = np.random.default_rng(0)
    requests = [{"features": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(64)]
    results = await asyncio.gather(*(batcher.submit(feeds, 1, None) for feeds in requests))
    for feeds, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result["logits"], model.run(feeds)["logits"], rtol=1e-5)
    assert batcher.batches_run < 64
    assert batcher.rows_run == 64
    await batcher.close()


async def test_string_and_scalar_inputs_run_through_the_batcher() -> None:
    data = multi_dtype_onnx()
    model = load(data)
    batcher = Batcher(model, max_batch_size=8, max_queue_delay_ms=0, max_queue_rows=64)
    inputs = {
        "f64": np.zeros((2, 2, 3)),
        "f16": np.zeros((2, 4), np.float16),
        "i64": np.arange(8, dtype=np.int32).reshape(2, 4),  # widened to INT64
        "i32": np.zeros((2, 4), np.int32),
        "i8": np.zeros((2, 4), np.int8),
        "u8": np.zeros((2, 4), np.uint8),
        "flag": np.array(True),
        "text": np.array([[b"a", b"b", b"c", b"d"], [b"", b"e", b"f", b"caf\xc3\xa9"]], object),
    }
    feeds, rows = prepare_inputs(model.signature, inputs)
    outputs = await batcher.submit(feeds, rows, None)
    assert outputs["text_out"].tolist() == [["a", "b", "c", "d"], ["", "e", "f", "café"]]
    assert outputs["i64_out"].dtype == np.int64
    assert bool(outputs["flag_out"]) is True
    await batcher.close()
