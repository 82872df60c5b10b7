"""Small real ONNX models for tests.

:func:`linear_onnx`, :func:`relu_model_bytes` and :func:`multi_dtype_onnx` use ``onnx.helper``
only (no torch), so they work on serving hosts; :func:`torch_mlp_onnx` and
:func:`torch_mlp_bytes` export tiny torch MLPs the way users do.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "linear_onnx",
    "linear_weights",
    "multi_dtype_onnx",
    "relu_model_bytes",
    "torch_mlp_bytes",
    "torch_mlp_onnx",
]

OPSET = 17


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="quarry-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def linear_weights(
    in_features: int = 3, out_features: int = 2, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The ``W`` and ``b`` that :func:`linear_onnx` bakes in for the same arguments."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((in_features, out_features)).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)
    return weight, bias


def linear_onnx(in_features: int = 3, out_features: int = 2, *, seed: int = 0) -> bytes:
    """``y = x @ W + b`` with FP32 ``x`` of shape ``[batch, in_features]`` (batch dynamic).

    Different seeds give different weights, hence different bytes and sha256.
    """
    weight, bias = linear_weights(in_features, out_features, seed=seed)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", in_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out_features])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    return _model(graph)


def relu_model_bytes(features: int = 4) -> bytes:
    """``y = relu(x)`` with FP32 ``x`` of shape ``[batch, features]``; no weights, no torch."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])],
    )
    return _model(graph)


def multi_dtype_onnx() -> bytes:
    """Identity paths for FP64, FP16, INT64, INT32, INT8, UINT8, BOOL and STRING tensors.

    Shapes mix fixed dimensions, a symbolic one (``"n"``), one with no name or value, and a
    scalar (``flag``).
    """
    kinds = {
        "f64": TensorProto.DOUBLE,
        "f16": TensorProto.FLOAT16,
        "i64": TensorProto.INT64,
        "i32": TensorProto.INT32,
        "i8": TensorProto.INT8,
        "u8": TensorProto.UINT8,
        "flag": TensorProto.BOOL,
        "text": TensorProto.STRING,
    }
    shapes = {k: ["n", 4] for k in kinds} | {"f64": [None, 2, 3], "flag": []}
    nodes = [helper.make_node("Identity", [k], [f"{k}_out"]) for k in kinds]
    inputs = [helper.make_tensor_value_info(k, t, shapes[k]) for k, t in kinds.items()]
    outputs = [helper.make_tensor_value_info(f"{k}_out", t, shapes[k]) for k, t in kinds.items()]
    return _model(helper.make_graph(nodes, "dtypes", inputs, outputs))


@functools.cache
def torch_mlp_onnx(in_features: int = 4, hidden: int = 8, out_features: int = 3) -> bytes:
    """An ``in -> hidden -> out`` MLP exported from torch, dynamic batch axis (cached per run)."""
    import torch  # imported here: only tests that use torch need it

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(in_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_features)
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            mlp.eval(),
            (torch.zeros(1, in_features),),
            buffer,
            input_names=["features"],
            output_names=["logits"],
            dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def torch_mlp_bytes() -> bytes:
    """An 8 -> 16 -> 2 torch MLP: input ``features`` ``[-1, 8]``, output ``logits`` ``[-1, 2]``."""
    return torch_mlp_onnx(8, 16, 2)
