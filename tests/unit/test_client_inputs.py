"""What `app.connect()`'s inference client accepts as predict inputs, converted on the caller."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from app.client import as_tensor, prepare_predict
from contracts.common import InvalidInput, Tensor
from contracts.features import HistoricalFeatures
from contracts.inference import Predict


def test_lists_and_arrays_become_tensors_sent_with_coerce() -> None:
    request = Predict(model="m", inputs={"x": [[1.0, 2.0]], "n": np.arange(3)})

    sent = prepare_predict(request)

    assert sent.coerce is True
    assert sent.inputs["x"].dtype == "FP64"
    assert sent.inputs["x"].to_numpy().tolist() == [[1.0, 2.0]]
    assert sent.inputs["n"].to_numpy().tolist() == [0, 1, 2]


def test_tensors_keep_the_exact_rule() -> None:
    tensor = Tensor.from_numpy(np.ones((1, 2), dtype=np.float64))
    request = Predict(model="m", inputs={"x": tensor})

    assert prepare_predict(request) is request
    assert prepare_predict(request).coerce is False


def test_a_dict_of_columns_is_stacked_in_its_order() -> None:
    array = as_tensor({"age": [30, 40], "income": [1.5, 2.5]}).to_numpy()

    assert array.tolist() == [[30.0, 1.5], [40.0, 2.5]]


def test_inputs_that_name_no_input_are_refused_with_the_shape_to_use() -> None:
    with pytest.raises(InvalidInput, match=r"inputs=\{'x': data\}"):
        prepare_predict(Predict(model="m", inputs=np.ones((2, 3))))  # type: ignore[arg-type]


def test_strings_become_bytes_tensors() -> None:
    assert as_tensor(["a", "bc"]).dtype == "BYTES"


def test_pandas_frames_and_series_become_tensors() -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})

    assert as_tensor(frame).to_numpy().tolist() == [[1.0, 3.0], [2.0, 4.0]]
    assert as_tensor(frame["b"]).to_numpy().tolist() == [3.0, 4.0]


def test_historical_features_go_into_a_dataframe_and_keep_rows() -> None:
    pandas = pytest.importorskip("pandas")
    answer = HistoricalFeatures(rows=[{"user": 1, "v:f": 0.5}, {"user": 2, "v:f": None}])

    frame = answer.to_pandas()

    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == ["user", "v:f"]
    assert frame["user"].tolist() == [1, 2]
    assert answer.rows[0] == {"user": 1, "v:f": 0.5}


def test_to_pandas_without_pandas_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed

    with pytest.raises(ImportError, match="pip install pandas"):
        HistoricalFeatures(rows=[]).to_pandas()
