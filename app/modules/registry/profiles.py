"""Reference profiles: the checks a registration's profile passes, and its JSON view for HTTP."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import numpy as np

from contracts.common import InvalidInput, Tensor
from contracts.registry import ColumnProfile, ReferenceProfile

__all__ = ["MAX_SAMPLE_ROWS", "ReferenceProfileView", "TensorValues", "check_profile", "view"]

MAX_SAMPLE_ROWS = 5_000
"""The most rows a profile's sample may hold."""


def check_profile(profile: ReferenceProfile) -> ReferenceProfile:
    """``profile`` if its tensors are consistent with its columns; :class:`InvalidInput` otherwise.

    The sample is FP32 ``[n, len(columns)]`` with ``n <= 5000``; every prediction has ``n``
    rows; column names are unique and every column profile names one of them.
    """
    columns = profile.columns
    if len(set(columns)) != len(columns) or not all(columns):
        raise _invalid("columns must be distinct, non-empty names", "columns")
    sample = profile.sample
    if sample.dtype != "FP32" or len(sample.shape) != 2 or sample.shape[1] != len(columns):
        raise _invalid(
            f"sample must be FP32 of shape [rows, {len(columns)}] (one value per column);"
            f" got {sample.dtype} {list(sample.shape)}",
            "sample",
        )
    rows = sample.shape[0]
    if rows > MAX_SAMPLE_ROWS:
        raise _invalid(f"sample holds {rows} rows; at most {MAX_SAMPLE_ROWS} are kept", "sample")
    sample.to_numpy()  # the data must fill the shape
    for name, tensor in profile.predictions.items():
        if not tensor.shape or tensor.shape[0] != rows:
            raise _invalid(
                f"prediction {name!r} has shape {list(tensor.shape)}; it needs one row per"
                f" sample row ({rows})",
                "predictions",
            )
        tensor.to_numpy()
    unknown = sorted({p.name for p in profile.profiles} - set(columns))
    if unknown:
        raise _invalid(f"column profiles name unknown columns: {', '.join(unknown)}", "profiles")
    if profile.rows < 0:
        raise _invalid("rows cannot be negative", "rows")
    return profile


def _invalid(message: str, field: str) -> InvalidInput:
    return InvalidInput(
        f"invalid reference profile: {message}", details={"field": f"reference_profile.{field}"}
    )


# --- the HTTP view ----------------------------------------------------------------------------


class TensorValues(msgspec.Struct, frozen=True, kw_only=True):
    """A tensor as JSON: its dtype, shape, and its values nested ``len(shape)`` lists deep.

    ``BYTES`` elements appear as text (UTF-8, undecodable bytes replaced).
    """

    dtype: str
    shape: list[int]
    values: Any


class ReferenceProfileView(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``GET .../versions/{version}/reference-profile``.

    ``sample`` is a list of rows, each a list of floats in ``columns`` order (non-finite values
    read as ``null``); ``predictions`` maps each model output to its values on those rows.
    """

    name: str
    version: int
    columns: list[str]
    sample: list[list[float]]
    predictions: dict[str, TensorValues] = {}
    profiles: list[ColumnProfile] = []
    rows: int = 0
    task: Literal["classification", "regression"] | None = None


def view(name: str, version: int, profile: ReferenceProfile) -> ReferenceProfileView:
    """The JSON view of version ``name:version``'s profile."""
    return ReferenceProfileView(
        name=name,
        version=version,
        columns=profile.columns,
        sample=profile.sample.to_numpy().astype(np.float64).tolist(),
        predictions={k: _values(t) for k, t in profile.predictions.items()},
        profiles=profile.profiles,
        rows=profile.rows,
        task=profile.task,
    )


def _values(tensor: Tensor) -> TensorValues:
    array = tensor.to_numpy()
    if tensor.dtype == "BYTES":
        array = np.vectorize(lambda b: bytes(b).decode(errors="replace"), otypes=[object])(array)
    return TensorValues(dtype=tensor.dtype, shape=list(tensor.shape), values=array.tolist())
