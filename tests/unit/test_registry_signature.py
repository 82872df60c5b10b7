"""Reading signatures from ONNX bytes, and refusing what is not a servable ONNX model."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from app.modules.registry.signature import read_signature
from contracts.common import InvalidInput
from contracts.registry import TensorSpec
from tests.fakes.models import linear_onnx, multi_dtype_onnx, torch_mlp_onnx


def _graph_model(value_type: onnx.TypeProto, *, ir_version: int = 8) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_value_info("x", value_type)],
        [helper.make_value_info("y", value_type)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = ir_version
    return model.SerializeToString()


def test_linear_model_has_a_dynamic_batch_axis() -> None:
    signature = read_signature(linear_onnx(3, 2))

    assert signature.inputs == [TensorSpec(name="x", dtype="FP32", shape=[-1, 3])]
    assert signature.outputs == [TensorSpec(name="y", dtype="FP32", shape=[-1, 2])]


def test_torch_export_reads_as_its_inputs_and_outputs() -> None:
    pytest.importorskip("torch")

    signature = read_signature(torch_mlp_onnx())

    assert signature.inputs == [TensorSpec(name="features", dtype="FP32", shape=[-1, 4])]
    assert signature.outputs == [TensorSpec(name="logits", dtype="FP32", shape=[-1, 3])]


def test_initializers_are_not_inputs() -> None:
    model = onnx.load_model_from_string(linear_onnx())
    # Older exporters list initializers among the graph inputs too.
    for init in model.graph.initializer:
        model.graph.input.append(
            helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        )

    signature = read_signature(model.SerializeToString())

    assert [spec.name for spec in signature.inputs] == ["x"]


def test_dtypes_use_open_inference_protocol_names() -> None:
    signature = read_signature(multi_dtype_onnx())

    dtypes = {spec.name: spec.dtype for spec in signature.inputs}
    assert dtypes == {
        "f64": "FP64",
        "f16": "FP16",
        "i64": "INT64",
        "i32": "INT32",
        "i8": "INT8",
        "u8": "UINT8",
        "flag": "BOOL",
        "text": "BYTES",
    }
    assert {spec.name: spec.dtype for spec in signature.outputs}["text_out"] == "BYTES"


def test_symbolic_and_unknown_dims_are_minus_one() -> None:
    signature = read_signature(multi_dtype_onnx())

    shapes = {spec.name: spec.shape for spec in signature.inputs}
    assert shapes["f64"] == [-1, 2, 3]  # a dim with neither value nor name
    assert shapes["i64"] == [-1, 4]  # a named (symbolic) dim
    assert shapes["flag"] == []  # a scalar


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is not a model at all \x00\xff\xfe", id="garbage"),
        pytest.param(b"\x08\x07", id="protobuf-without-graph"),
    ],
)
def test_bytes_that_are_not_onnx_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="ONNX"):
        read_signature(data)


def test_a_truncated_model_is_invalid_input() -> None:
    data = linear_onnx()

    with pytest.raises(InvalidInput, match="ONNX"):
        read_signature(data[: len(data) // 2])


def test_a_model_failing_the_checker_names_the_problem() -> None:
    model = onnx.load_model_from_string(linear_onnx())
    model.graph.node[0].op_type = "NoSuchOperator"

    with pytest.raises(InvalidInput, match="NoSuchOperator"):
        read_signature(model.SerializeToString())


def test_non_tensor_inputs_are_refused() -> None:
    sequence = helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [2])
    )

    with pytest.raises(InvalidInput, match="only tensor inputs and outputs"):
        read_signature(_graph_model(sequence))


def test_dtypes_outside_the_protocol_are_refused() -> None:
    bf16 = helper.make_tensor_type_proto(TensorProto.BFLOAT16, [2])

    with pytest.raises(InvalidInput, match="BFLOAT16"):
        read_signature(_graph_model(bf16))


def test_external_data_is_refused() -> None:
    model = onnx.load_model_from_string(linear_onnx())
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    location = weight.external_data.add()
    location.key, location.value = "location", "weights.bin"

    with pytest.raises(InvalidInput, match="external file"):
        read_signature(model.SerializeToString())


def test_invalid_input_carries_no_stack_trace() -> None:
    with pytest.raises(InvalidInput) as caught:
        read_signature(b"garbage")

    assert "Traceback" not in caught.value.message
    assert caught.value.to_dict()["code"] == "invalid_input"
