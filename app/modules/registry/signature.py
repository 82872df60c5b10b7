"""Reading a model's signature from its ONNX bytes.

The registry refuses anything ``onnx`` cannot load and check, and anything an Open Inference
Protocol server could not feed: non-tensor inputs, dtypes outside the protocol, inputs of unknown
rank and tensors stored in external files (the registry keeps exactly one file per version).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

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


def read_signature(data: bytes) -> Signature:
    """Load and check the ONNX model in ``data`` and answer its inputs and outputs.

    Raises :class:`InvalidInput` (HTTP 400) with a message saying what is wrong when ``data`` is
    not a valid ONNX model or has inputs or outputs the registry cannot describe.
    """
    model = _load(data)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    outputs = list(graph.output)
    if not inputs or not outputs:
        raise InvalidInput("the ONNX graph declares no inputs or no outputs")
    return Signature(
        inputs=[_spec(v, "input", need_rank=True) for v in inputs],
        outputs=[_spec(v, "output", need_rank=False) for v in outputs],
    )


def _load(data: bytes) -> onnx.ModelProto:
    if not data:
        raise InvalidInput("the model file is empty; expected the bytes of an ONNX model")
    try:
        model = onnx.load_model_from_string(bytes(data))
    except Exception as exc:
        raise InvalidInput(
            f"the model file is not an ONNX model: {_short(exc)}", details={"reason": "parse"}
        ) from None
    for tensor in _all_initializers(model):
        if tensor.data_location == TensorProto.EXTERNAL:
            raise InvalidInput(
                f"the ONNX model keeps tensor {tensor.name!r} in an external file; save it with"
                " every tensor inside the model file (save_as_external_data=False)",
                details={"reason": "external_data"},
            )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidInput(
            f"the ONNX model is not valid: {_short(exc)}", details={"reason": "check"}
        ) from None
    return model


def _all_initializers(model: onnx.ModelProto) -> list[TensorProto]:
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors.extend(attr.t for attr in node.attribute if attr.HasField("t"))
    return tensors


def _spec(value: onnx.ValueInfoProto, kind: str, *, need_rank: bool) -> TensorSpec:
    if value.type.WhichOneof("value") != "tensor_type":
        raise InvalidInput(
            f"{kind} {value.name!r} is a {value.type.WhichOneof('value') or 'value of no type'};"
            " only tensor inputs and outputs can be served (for sklearn-onnx classifiers,"
            " convert with zipmap=False)",
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
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
