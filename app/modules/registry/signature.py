"""Reading a model's signature from its ONNX bytes.

The registry refuses anything ``onnx`` cannot load and check, and anything an Open Inference
Protocol server could not feed (once ZipMap outputs became tensors, see
:mod:`app.modules.registry.classifiers`): non-tensor inputs, dtypes outside the protocol, inputs
of unknown rank, and inputs or outputs whose static dimensions alone exceed
``QUARRY_MAX_TENSOR_BYTES``. A model is data, never a path to the host: a tensor with external
data anywhere in it (subgraphs, functions and sparse initializers included; see
:mod:`app.kernel.onnx_external`) is refused, or ONNX Runtime would read that file from the server
when it loads the model.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from app.kernel.onnx_external import external_tensors
from app.modules.registry.validation import DEFAULT_MAX_TENSOR_BYTES, check_tensor_sizes
from contracts.common import InvalidInput
from contracts.registry import Signature, TensorSpec

__all__ = ["OIP_DTYPES", "read_signature"]

OIP_DTYPES: dict[int, str] = {
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES",
}
"""ONNX element types and their Open Inference Protocol names."""

_MAX_MESSAGE = 300


def read_signature(data: bytes, *, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> Signature:
    """Load and check the ONNX model in ``data`` and answer its inputs and outputs.

    Raises :class:`InvalidInput` (HTTP 400) with a message saying what is wrong when ``data`` is
    not a valid ONNX model, keeps tensors in external files, or has inputs or outputs the
    registry cannot describe or whose static dimensions alone take more than
    ``max_tensor_bytes``.
    """
    model = _load(data)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    outputs = list(graph.output)
    if not inputs or not outputs:
        raise InvalidInput("the ONNX graph declares no inputs or no outputs")
    signature = Signature(
        inputs=[_spec(v, "input", need_rank=True) for v in inputs],
        outputs=[_spec(v, "output", need_rank=False) for v in outputs],
    )
    check_tensor_sizes(signature, max_tensor_bytes)
    return signature


def _load(data: bytes) -> onnx.ModelProto:
    if not data:
        raise InvalidInput("the model file is empty; expected the bytes of an ONNX model")
    try:
        model = onnx.load_model_from_string(bytes(data))
    except Exception as exc:
        raise InvalidInput(
            f"the model file is not an ONNX model: {_short(exc)}", details={"reason": "parse"}
        ) from None
    external = external_tensors(model)
    if external:
        raise InvalidInput(
            f"the ONNX model keeps {len(external)} tensor(s) in external files, first at"
            f" {_cut(external[0])}; save it with every tensor inside the model file"
            " (onnx.save_model(..., save_as_external_data=False))",
            details={"reason": "external_data", "tensors": [_cut(w) for w in external[:10]]},
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidInput(
            f"the ONNX model is not valid: {_short(exc)}", details={"reason": "check"}
        ) from None
    return model


def _spec(value: onnx.ValueInfoProto, kind: str, *, need_rank: bool) -> TensorSpec:
    if value.type.WhichOneof("value") != "tensor_type":
        raise InvalidInput(
            f"{kind} {value.name!r} is a {value.type.WhichOneof('value') or 'value of no type'};"
            " only tensor inputs and outputs can be served (a ZipMap output of class"
            " probabilities is turned into a tensor at registration; other sequences and maps"
            " are not)",
            details={kind: value.name},
        )
    tensor = value.type.tensor_type
    dtype = OIP_DTYPES.get(tensor.elem_type)
    if dtype is None:
        onnx_name = TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "UNDEFINED"
        raise InvalidInput(
            f"{kind} {value.name!r} has element type {onnx_name}, which the Open Inference"
            f" Protocol cannot carry; supported: {', '.join(sorted(set(OIP_DTYPES.values())))}",
            details={kind: value.name, "dtype": onnx_name},
        )
    if not tensor.HasField("shape"):
        if need_rank:
            raise InvalidInput(
                f"{kind} {value.name!r} declares no shape; graph inputs need a known rank"
                " (dimensions may be symbolic)",
                details={kind: value.name},
            )
        # The checker demands shapes today; should it relax, an output of unknown rank is
        # described as one dynamic dimension, the closest a TensorSpec comes.
        return TensorSpec(name=value.name, dtype=dtype, shape=[-1])
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
    return TensorSpec(name=value.name, dtype=dtype, shape=shape)


def _short(exc: Exception) -> str:
    return _cut(" ".join(str(exc).split()) or type(exc).__name__)


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
