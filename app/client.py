"""What ``app.connect()`` adds on the caller's side: predict inputs as plain Python data.

``q.inference.predict(Predict(model=..., inputs=...))`` takes, for each input, a
:class:`~contracts.common.Tensor` or anything this module turns into one before the request
leaves the caller:

- a numpy array, a list (nested for more dimensions), a tuple or a scalar;
- a pandas ``DataFrame`` (its values, columns in order: ``[rows, columns]``) or ``Series``;
- a dict of columns, ``{"age": [...], "income": [...]}``: stacked side by side, in the dict's
  order, like a DataFrame.

**Number types.** JSON-like data has no float32, so a request with any converted input is sent
with ``coerce=True``: the server converts its numbers to the dtypes of the model's signature
when every value fits (float64 to FP32 as long as nothing overflows to infinity; to an integer
type only whole numbers in range), and refuses the request (422) otherwise. Inputs already given
as ``Tensor`` keep the exact rule (``coerce`` as the request sets it).

pandas is never required: it is only looked at when a value is a pandas object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

from contracts.common import InvalidInput, Tensor
from contracts.inference import Predict, Prediction

__all__ = ["ConvenientInference", "as_tensor", "prepare_predict", "with_conveniences"]


def as_tensor(value: Any) -> Tensor:
    """``value`` as a tensor: see the module's docstring for what is accepted."""
    if isinstance(value, Tensor):
        return value
    return Tensor.from_numpy(_as_array(value))


def _as_array(value: Any) -> np.ndarray[Any, Any]:
    if isinstance(value, np.ndarray):
        return value
    if _is_pandas(value):
        return np.asarray(value.to_numpy())
    if isinstance(value, Mapping):
        columns = [np.asarray(_as_array(column)) for column in value.values()]
        if not columns:
            raise ValueError("a dict of columns needs at least one column")
        return np.column_stack(columns)
    return np.asarray(value)


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "pandas" and hasattr(value, "to_numpy")


def prepare_predict(request: Predict) -> Predict:
    """``request`` with every input a tensor; ``coerce=True`` when any input was converted."""
    if not isinstance(request.inputs, Mapping):
        raise InvalidInput(
            f"Predict.inputs maps each input name to its data, e.g. inputs={{'x': data}};"
            f" got a {type(request.inputs).__name__}"
        )
    if all(isinstance(v, Tensor) for v in request.inputs.values()):
        return request
    inputs = {name: as_tensor(value) for name, value in request.inputs.items()}
    return msgspec.structs.replace(request, inputs=inputs, coerce=True)


class ConvenientInference:
    """The inference contract, with :meth:`predict` taking plain Python inputs."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.protocol = client.protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return repr(self._client)

    async def predict(self, request: Predict) -> Prediction:
        """Run a model; inputs may be tensors, arrays, lists or DataFrames (module docstring)."""
        result: Prediction = await self._client.predict(prepare_predict(request))
        return result


def with_conveniences(clients: Mapping[str, Any]) -> dict[str, Any]:
    """``clients`` with the inference client wrapped by :class:`ConvenientInference`."""
    wrapped = dict(clients)
    if "inference" in wrapped:
        wrapped["inference"] = ConvenientInference(wrapped["inference"])
    return wrapped
