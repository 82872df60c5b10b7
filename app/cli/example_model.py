"""``quarry example-model PATH``: write a small ONNX model to try the registry and inference with.

The model is a logistic regression, ``score = sigmoid(x @ W + b)``, over FP32 ``x`` of shape
``[batch, features]``. It is built with ``onnx.helper`` alone, so it needs neither torch nor
ONNX Runtime: any Quarry install can write one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.kernel.settings import ConfigError, Settings

__all__ = ["example_model", "example_model_bytes"]

OPSET = 17
IR_VERSION = 8  # what every ONNX Runtime since 1.14 reads


def example_model_bytes(features: int = 3) -> bytes:
    """The serialised model: input ``x`` (``[batch, features]``), output ``score`` (``[batch, 1]``).

    The weights are fixed (``W`` rises from -1 to 1 over the features, ``b`` is 0), so the same
    ``features`` always gives the same bytes, hence the same sha256.
    """
    import numpy as np  # imported here: other commands never pay for onnx
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.linspace(-1.0, 1.0, features, dtype=np.float32).reshape(features, 1)
    bias = np.zeros(1, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["score"]),
        ],
        "example_logistic_regression",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="quarry"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    serialised: bytes = model.SerializeToString()
    return serialised


def example_model(_settings: Settings, args: argparse.Namespace) -> int:
    """Write the example model to ``args.path`` and say what its signature is."""
    if args.features < 1:
        raise ConfigError(f"--features must be at least 1, not {args.features}")
    path = Path(args.path)
    try:
        path.write_bytes(example_model_bytes(args.features))
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    print(
        f"wrote {path}: input x float32 [batch, {args.features}], output score float32 [batch, 1]"
    )
    return 0
