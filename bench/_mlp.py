"""The model ``bench.predict_http`` serves: a 32->256->256->2 MLP built with ``onnx.helper``
(random FP32 weights, ReLU between layers), input ``x`` [batch, 32], output ``y`` [batch, 2]."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["FEATURES", "LAYERS", "request_body", "write_identity", "write_model"]

FEATURES = 32
LAYERS = (FEATURES, 256, 256, 2)


def write_model(path: Path, seed: int = 0, layers: tuple[int, ...] = LAYERS) -> Path:
    """Write the MLP to ``path`` (opset 17) and answer it; ``layers`` are its widths, input
    first (``FEATURES``) and output last."""
    rng = np.random.default_rng(seed)
    nodes, weights = [], []
    previous = "x"
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(layers)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(layers) - 2
        out = "y" if last else f"h{i}"
        nodes.append(
            helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [out if last else f"g{i}"])
        )
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        previous = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", layers[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", layers[-1]])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_identity(path: Path) -> Path:
    """Write an ``Identity`` model (``y = x``, FP32 [batch, 32]) to ``path`` and answer it."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", FEATURES])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def request_body(rows: int = 1, seed: int = 1) -> str:
    """The JSON body every server gets: ``{"inputs": {"x": [[32 floats], ...]}}``."""
    x = np.random.default_rng(seed).standard_normal((rows, FEATURES)).astype(np.float32)
    return json.dumps({"inputs": {"x": [[round(float(v), 6) for v in row] for row in x]}})
