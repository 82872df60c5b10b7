"""A scikit-learn classifier trained on string labels answers its labels as strings: on
``/v1/predict`` and the Open Inference Protocol as JSON strings, to the Python client as ``str``.

The model is iris with its target names as labels (``"setosa"``, ...), exported by skl2onnx
without the ZipMap (``options={"zipmap": False}``): ``output_label`` is a ``STRING`` tensor and
``output_probability`` a float matrix (the names given, as skl2onnx's defaults change between
releases).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import app
from app.bootstrap import Platform, create_app
from app.kernel.settings import Settings
from contracts.common import Tensor
from contracts.inference import Predict
from contracts.registry import RegisterVersion

sklearn_datasets = pytest.importorskip("sklearn.datasets")
sklearn_linear = pytest.importorskip("sklearn.linear_model")
skl2onnx = pytest.importorskip("skl2onnx")
data_types = pytest.importorskip("skl2onnx.common.data_types")

ROWS = [0, 50, 100, 1]
"""Iris rows of each species: setosa, versicolor, virginica, setosa."""


def iris_classifier() -> tuple[bytes, np.ndarray[Any, Any], list[str]]:
    """The ONNX bytes of a logistic regression on iris with string labels, the iris features
    of :data:`ROWS` and the labels the model itself predicts for them."""
    iris = sklearn_datasets.load_iris()
    x = iris.data.astype(np.float32)
    labels = iris.target_names[iris.target]
    model = sklearn_linear.LogisticRegression(max_iter=1000).fit(x, labels)
    onnx_model = skl2onnx.convert_sklearn(
        model,
        initial_types=[("input", data_types.FloatTensorType([None, 4]))],
        final_types=[
            ("output_label", data_types.StringTensorType([None])),
            ("output_probability", data_types.FloatTensorType([None, 3])),
        ],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onnx_model.SerializeToString(), x[ROWS], [str(v) for v in model.predict(x[ROWS])]


@pytest.fixture(scope="module")
def classifier() -> tuple[bytes, np.ndarray[Any, Any], list[str]]:
    return iris_classifier()


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    async with Platform(Settings(data_dir=tmp_path)) as running:
        yield running


@pytest.fixture
async def client(
    platform: Platform, classifier: tuple[bytes, np.ndarray[Any, Any], list[str]]
) -> AsyncIterator[httpx.AsyncClient]:
    artifact = classifier[0]
    transport = httpx.ASGITransport(app=create_app(platform, host="127.0.0.1"))
    async with httpx.AsyncClient(transport=transport, base_url="http://q") as http:
        registered = await http.post(
            "/v1/registry/models/iris/versions", files={"file": ("iris.onnx", artifact)}
        )
        assert registered.status_code == 201, registered.text
        yield http


async def test_predict_answers_the_labels_as_strings(
    client: httpx.AsyncClient, classifier: tuple[bytes, np.ndarray[Any, Any], list[str]]
) -> None:
    _, x, expected = classifier

    answer = await client.post("/v1/predict/iris", json={"inputs": {"input": x.tolist()}})

    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    assert outputs["output_label"] == expected
    assert expected[:3] == ["setosa", "versicolor", "virginica"]
    assert np.asarray(outputs["output_probability"]).shape == (len(ROWS), 3)


async def test_oip_answers_the_labels_as_strings(
    client: httpx.AsyncClient, classifier: tuple[bytes, np.ndarray[Any, Any], list[str]]
) -> None:
    _, x, expected = classifier
    request = {
        "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}
        ]
    }

    answer = await client.post("/v2/models/iris/infer", json=request)

    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["output_label"]["datatype"] == "BYTES"
    assert outputs["output_label"]["data"] == expected


async def test_the_python_client_reads_the_labels_as_str(
    tmp_path: Path, classifier: tuple[bytes, np.ndarray[Any, Any], list[str]]
) -> None:
    artifact, x, expected = classifier
    async with app.connect(data_dir=tmp_path / "q") as q:
        await q.registry.register_version(RegisterVersion(name="iris", artifact=artifact))

        prediction = await q.inference.predict(Predict(model="iris", inputs={"input": x}))

    labels = prediction.outputs["output_label"].to_list()
    assert labels == expected
    assert all(type(label) is str for label in labels)


def test_bytes_that_are_not_text_stay_bytes_in_a_list() -> None:
    tensor = Tensor.from_numpy(np.array([[b"\xff\xfe"], [b"ok"]], dtype=object))

    assert tensor.to_list() == [[b"\xff\xfe"], ["ok"]]
