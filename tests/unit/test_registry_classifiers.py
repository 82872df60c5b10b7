"""ZipMap outputs become probability tensors; a version's task is never read from names alone."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from app.modules.registry.classifiers import decide, remove_zipmap
from app.modules.registry.signature import read_signature
from contracts.common import InvalidInput
from contracts.registry import Lineage


def _iris_with_integer_labels() -> tuple[np.ndarray, LogisticRegression, bytes]:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=300).fit(x, y)
    return x, model, to_onnx(model, x[:1]).SerializeToString()


def test_a_zipmap_output_becomes_the_probability_tensor_it_was_fed() -> None:
    x, model, data = _iris_with_integer_labels()

    converted = remove_zipmap(data)
    signature = read_signature(converted.data)

    assert converted.zipmap_removed
    assert converted.classes == ["0", "1", "2"]
    outputs = {o.name: o for o in signature.outputs}
    assert (outputs["output_probability"].dtype, outputs["output_probability"].shape) == (
        "FP32",
        [-1, 3],
    )
    session = ort.InferenceSession(converted.data, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["output_label", "output_probability"], {"X": x[:5]})
    np.testing.assert_allclose(probabilities, model.predict_proba(x[:5]), rtol=1e-4, atol=1e-5)
    assert labels.tolist() == model.predict(x[:5]).tolist()


def test_models_without_a_zipmap_are_stored_as_they_are() -> None:
    x, model, _ = _iris_with_integer_labels()
    data = to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString()

    converted = remove_zipmap(data)

    assert converted.data == data
    assert not converted.zipmap_removed
    assert converted.classes == ["0", "1", "2"]  # from the classifier node
    assert remove_zipmap(b"not a model").data == b"not a model"


def _named_probabilities() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["probabilities"])],
        "named",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_an_output_name_alone_makes_no_classifier() -> None:
    signature = read_signature(_named_probabilities())
    fields = {"signature": signature, "graph_classes": [], "lineage": Lineage(), "profile": None}

    assert decide(task=None, classes=[], **fields) == (None, [])
    assert decide(task="classification", classes=["a", "b"], **fields) == (
        "classification",
        ["a", "b"],
    )
    with pytest.raises(InvalidInput, match="distinct"):
        decide(task=None, classes=["a", "a"], **fields)
    with pytest.raises(InvalidInput, match="unknown task"):
        decide(task="ranking", classes=[], **fields)
