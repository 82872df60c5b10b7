"""Request arrays are checked against the model's signature the way MLflow enforces signatures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.modules.inference.inputs import numpy_dtype, prepare_inputs
from contracts.common import UnprocessableInput
from contracts.registry import Signature, TensorSpec


def signature(*inputs: tuple[str, str, list[int]]) -> Signature:
    specs = [TensorSpec(name=name, dtype=dtype, shape=shape) for name, dtype, shape in inputs]
    return Signature(inputs=specs, outputs=[TensorSpec(name="y", dtype="FP32", shape=[-1])])


def refused(sig: Signature, inputs: dict[str, Any], **kwargs: Any) -> UnprocessableInput:
    with pytest.raises(UnprocessableInput) as caught:
        prepare_inputs(sig, inputs, **kwargs)
    return caught.value


FEATURES = signature(("x", "FP32", [-1, 3]))


def test_a_fitting_array_passes_through_without_a_copy() -> None:
    x = np.ones((2, 3), dtype=np.float32)
    feeds, rows = prepare_inputs(FEATURES, {"x": x})
    assert feeds["x"] is x
    assert rows == 2


def test_a_missing_input_is_named_with_what_the_model_expects() -> None:
    sig = signature(("x", "FP32", [-1, 3]), ("ids", "INT64", [-1]))
    error = refused(sig, {"x": np.ones((1, 3), np.float32)})
    assert "missing input 'ids'" in error.message
    assert error.details["input"] == "ids"
    assert error.details["expected"] == ["x", "ids"]


def test_unknown_inputs_are_dropped() -> None:
    feeds, _ = prepare_inputs(FEATURES, {"x": np.ones((1, 3), np.float32), "extra": np.zeros(1)})
    assert list(feeds) == ["x"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (np.int8, "INT64"),
        (np.int16, "INT64"),
        (np.int32, "INT64"),
        (np.uint32, "INT64"),
        (np.uint8, "INT16"),
        (np.int8, "FP16"),
        (np.int16, "FP32"),
        (np.int32, "FP64"),
        (np.float16, "FP32"),
        (np.float16, "FP64"),
        (np.float32, "FP64"),
    ],
)
def test_lossless_widening_is_applied(given: type, expected: str) -> None:
    sig = signature(("v", expected, [-1]))
    values = np.array([0, 1, 7], dtype=given)
    feeds, _ = prepare_inputs(sig, {"v": values})
    assert feeds["v"].dtype == numpy_dtype(expected)
    assert feeds["v"].tolist() == values.tolist()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (np.int64, "FP32"),
        (np.int64, "FP64"),  # numpy calls it safe; values above 2**53 round
        (np.uint64, "INT64"),
        (np.int32, "FP32"),
        (np.float64, "FP32"),
        (np.float32, "INT64"),
        (np.int64, "INT32"),
        (np.bool_, "INT64"),
        (np.int64, "BOOL"),
        (np.int8, "UINT8"),
        (np.float32, "BYTES"),
    ],
)
def test_lossy_or_foreign_conversions_are_refused(given: type, expected: str) -> None:
    sig = signature(("v", expected, [-1]))
    error = refused(sig, {"v": np.zeros(2, dtype=given)})
    assert "input 'v'" in error.message
    assert np.dtype(given).name in error.message
    assert expected in error.message
    assert error.details == {"input": "v", "dtype": np.dtype(given).name, "expected": expected}


def test_strings_are_refused_for_a_number_input() -> None:
    error = refused(FEATURES, {"x": np.array([["1", "2", "3"]])})
    assert error.details == {"input": "x", "dtype": "str", "expected": "FP32"}


def test_big_endian_numbers_are_converted_to_native_order() -> None:
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    feeds, _ = prepare_inputs(FEATURES, {"x": x})
    assert feeds["x"].dtype == np.float32
    assert feeds["x"].tolist() == x.tolist()


TEXT = signature(("text", "BYTES", [-1]))


@pytest.mark.parametrize(
    "given",
    [
        np.array([b"caf\xc3\xa9", b""], dtype=object),
        np.array(["café", ""], dtype=object),
        np.array(["café", ""]),
        np.array([b"caf\xc3\xa9", b""]),
        np.array([b"caf\xc3\xa9", ""], dtype=object),
    ],
)
def test_bytes_inputs_reach_the_session_as_text(given: np.ndarray) -> None:
    feeds, rows = prepare_inputs(TEXT, {"text": given})
    assert feeds["text"].tolist() == ["café", ""]
    assert rows == 2


def test_bytes_that_are_not_utf8_are_refused() -> None:
    error = refused(TEXT, {"text": np.array([b"\xff"], dtype=object)})
    assert "input 'text'" in error.message
    assert "UTF-8" in error.message


def test_a_bytes_input_refuses_other_objects() -> None:
    error = refused(TEXT, {"text": np.array(["ok", 3], dtype=object)})
    assert "input 'text' holds a int value" in error.message


def test_rank_must_match() -> None:
    error = refused(FEATURES, {"x": np.ones(3, np.float32)})
    assert error.message.startswith("input 'x' has shape [3]")
    assert error.details == {"input": "x", "shape": [3], "expected": [-1, 3]}


def test_fixed_dimensions_must_match_and_dynamic_ones_are_free() -> None:
    sig = signature(("tokens", "INT64", [-1, -1, 4]))
    feeds, rows = prepare_inputs(sig, {"tokens": np.zeros((2, 7, 4), np.int64)})
    assert rows == 2
    assert feeds["tokens"].shape == (2, 7, 4)
    error = refused(sig, {"tokens": np.zeros((2, 7, 5), np.int64)})
    assert "input 'tokens' has shape [2, 7, 5]" in error.message


def test_inputs_must_agree_on_the_batch_size() -> None:
    sig = signature(("a", "FP32", [-1, 3]), ("b", "INT64", [-1]))
    error = refused(sig, {"a": np.ones((3, 3), np.float32), "b": np.zeros(2, np.int64)})
    assert "'a' has 3 rows, 'b' has 2" in error.message
    assert error.details["input"] == "b"


def test_a_fixed_first_dimension_and_a_scalar_do_not_count_as_the_batch() -> None:
    sig = signature(("x", "FP32", [-1, 3]), ("table", "FP32", [5]), ("flag", "BOOL", []))
    inputs = {
        "x": np.ones((2, 3), np.float32),
        "table": np.ones(5, np.float32),
        "flag": np.array(True),
    }
    _, rows = prepare_inputs(sig, inputs)
    assert rows == 2


def test_an_empty_batch_is_refused() -> None:
    error = refused(FEATURES, {"x": np.ones((0, 3), np.float32)})
    assert "input 'x' holds no rows" in error.message


def test_a_batch_over_the_limit_is_refused() -> None:
    error = refused(FEATURES, {"x": np.ones((5, 3), np.float32)}, max_rows=4)
    assert error.message == "batch of 5 rows exceeds the limit 4"
    prepare_inputs(FEATURES, {"x": np.ones((4, 3), np.float32)}, max_rows=4)


def test_nan_is_a_value_like_any_other() -> None:
    x = np.full((1, 3), np.nan, dtype=np.float32)
    feeds, _ = prepare_inputs(FEATURES, {"x": x})
    assert np.isnan(feeds["x"]).all()


def test_feeds_are_c_contiguous_in_signature_order() -> None:
    sig = signature(("a", "FP32", [-1, 3]), ("b", "FP64", [-1, 2]))
    a = np.ones((3, 6), np.float32)[:, ::2]
    b = np.ones((2, 3), np.float32).T  # also widened
    feeds, _ = prepare_inputs(sig, {"b": b, "a": a})
    assert list(feeds) == ["a", "b"]
    assert all(array.flags.c_contiguous for array in feeds.values())
    assert feeds["b"].dtype == np.float64
