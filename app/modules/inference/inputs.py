"""Checking request arrays against a model's signature and turning them into session feeds.

The rules follow MLflow's signature enforcement: every input the signature names must be there
(extra ones are dropped); a dtype passes when it matches or widens without loss; shapes keep the
signature's rank and fixed dimensions; every batched input has the same number of rows. Each
violation is an :class:`UnprocessableInput` (HTTP 422) naming the input.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from contracts.common import Tensor, TensorDType, UnprocessableInput
from contracts.registry import Signature, TensorSpec

__all__ = ["numpy_dtype", "prepare_inputs"]

Array = npt.NDArray[Any]


def _numpy_dtypes() -> dict[str, np.dtype[Any]]:
    # Read from the contract's own Tensor so the mapping is defined in one place.
    empty = memoryview(b"")
    return {
        name: Tensor(dtype=name, shape=(0,), data=empty).to_numpy().dtype.newbyteorder("=")
        for name in typing.get_args(TensorDType)
        if name != "BYTES"
    }


_DTYPES = _numpy_dtypes()


def numpy_dtype(oip_dtype: str) -> np.dtype[Any]:
    """The numpy dtype of an Open Inference Protocol dtype (``object`` for ``BYTES``)."""
    return _DTYPES.get(oip_dtype, np.dtype(object))


def prepare_inputs(
    signature: Signature, inputs: Mapping[str, Array], *, max_rows: int | None = None
) -> tuple[dict[str, Array], int]:
    """Check ``inputs`` against ``signature``; answer the session feeds and the batch size.

    Feeds are C-contiguous arrays of the signature's dtypes, in signature order; arrays that
    already fit are passed through without a copy. The batch size is the first dimension shared
    by the inputs whose first dimension is dynamic (1 when none is). Raises
    :class:`UnprocessableInput` naming the offending input, for a batch of no rows, and for one
    over ``max_rows``.
    """
    feeds: dict[str, Array] = {}
    rows: int | None = None
    first = ""
    for spec in signature.inputs:
        array = _input(signature, inputs, spec.name)
        array = _shaped(spec, _typed(spec, array))
        if spec.shape and spec.shape[0] < 0:
            if rows is None:
                rows, first = array.shape[0], spec.name
            elif array.shape[0] != rows:
                raise UnprocessableInput(
                    f"inputs disagree on the batch size: {first!r} has {rows} rows,"
                    f" {spec.name!r} has {array.shape[0]}",
                    details={"input": spec.name, "rows": array.shape[0], "expected": rows},
                )
        feeds[spec.name] = array
    if rows is None:
        rows = _fixed_rows(feeds)
    _check_rows(rows, first or next(iter(feeds)), max_rows)
    return feeds, rows


def _input(signature: Signature, inputs: Mapping[str, Array], name: str) -> Array:
    array = inputs.get(name)
    if array is None:
        expected = [spec.name for spec in signature.inputs]
        raise UnprocessableInput(
            f"missing input {name!r}: the model expects {', '.join(map(repr, expected))}",
            details={"input": name, "expected": expected},
        )
    return array if isinstance(array, np.ndarray) else np.asarray(array)


def _fixed_rows(feeds: Mapping[str, Array]) -> int:
    for array in feeds.values():
        if array.ndim:
            return int(array.shape[0])
    return 1


def _check_rows(rows: int, name: str, max_rows: int | None) -> None:
    if rows == 0:
        raise UnprocessableInput(
            f"input {name!r} holds no rows; send a batch of at least one",
            details={"input": name, "rows": 0},
        )
    if max_rows is not None and rows > max_rows:
        raise UnprocessableInput(
            f"batch of {rows} rows exceeds the limit {max_rows}",
            details={"rows": rows, "limit": max_rows},
        )


# --- dtypes ---------------------------------------------------------------------------------


def _typed(spec: TensorSpec, array: Array) -> Array:
    if spec.dtype == "BYTES":
        return _strings(spec, array)
    expected = _DTYPES.get(spec.dtype)
    if expected is None:
        raise UnprocessableInput(
            f"input {spec.name!r} has dtype {spec.dtype}, which cannot be served",
            details={"input": spec.name, "expected": spec.dtype},
        )
    if array.dtype == expected:
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    if _widens(array.dtype, expected):
        return array.astype(expected, order="C")
    raise _dtype_error(spec, array, f"{spec.dtype} ({expected.name})")


def _widens(source: np.dtype[Any], target: np.dtype[Any]) -> bool:
    """Whether every ``source`` value has an exact ``target`` value (bool converts to nothing)."""
    if source.kind not in "iuf" or target.kind not in "iuf":
        return False
    if not np.can_cast(source, target, "safe"):
        return False
    # numpy calls int64 -> float64 safe, yet integers above 2**53 round: MLflow refuses it too.
    return not (source.kind in "iu" and target.kind == "f" and source.itemsize >= target.itemsize)


def _dtype_error(spec: TensorSpec, array: Array, expected: str) -> UnprocessableInput:
    return UnprocessableInput(
        f"input {spec.name!r} has dtype {_describe(array.dtype)}; the model expects {expected}"
        " and only conversions that lose nothing are made",
        details={"input": spec.name, "dtype": _describe(array.dtype), "expected": spec.dtype},
    )


def _describe(dtype: np.dtype[Any]) -> str:
    return {"O": "object", "U": "str", "S": "bytes"}.get(dtype.kind, dtype.name)


def _strings(spec: TensorSpec, array: Array) -> Array:
    """ONNX Runtime takes ``str`` (it would feed ``repr()`` of ``bytes``): decode UTF-8."""
    kind = array.dtype.kind
    if kind == "U":
        return np.ascontiguousarray(array)
    if kind == "S":
        return _decoded(spec, array.astype(object))
    if kind == "O":
        return _decoded(spec, array)
    raise _dtype_error(spec, array, "BYTES (str or bytes)")


def _decoded(spec: TensorSpec, array: Array) -> Array:
    items = array.ravel().tolist()
    if all(type(item) is str for item in items):
        return np.ascontiguousarray(array)
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            out[i] = _utf8(spec, item)
        elif isinstance(item, str):
            out[i] = item
        else:
            raise UnprocessableInput(
                f"input {spec.name!r} holds a {type(item).__name__} value; BYTES inputs take"
                " str or bytes elements",
                details={"input": spec.name, "expected": spec.dtype},
            )
    return out.reshape(array.shape)


def _utf8(spec: TensorSpec, raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise UnprocessableInput(
            f"input {spec.name!r} holds bytes that are not UTF-8 text; ONNX Runtime string"
            " tensors take UTF-8",
            details={"input": spec.name, "expected": spec.dtype},
        ) from None


# --- shapes ---------------------------------------------------------------------------------


def _shaped(spec: TensorSpec, array: Array) -> Array:
    shape = array.shape
    if len(shape) == len(spec.shape):  # a plain loop: on every prediction, a generator costs
        for want, got in zip(spec.shape, shape, strict=True):
            if want >= 0 and want != got:
                break
        else:
            return array
    raise UnprocessableInput(
        f"input {spec.name!r} has shape {list(shape)}; the model expects {spec.shape}"
        " (-1 = any size)",
        details={"input": spec.name, "shape": list(shape), "expected": spec.shape},
    )
