"""Class labels of a prediction: the most probable class of each row, as text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["labels_of"]


def labels_of(classes: list[str], outputs: Mapping[str, npt.NDArray[Any]]) -> list[str]:
    """``classes[argmax]`` per row of the first float output of shape ``[rows, len(classes)]``;
    empty when the version has no classes or no such output was computed."""
    if not classes:
        return []
    for array in outputs.values():
        if array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] == len(classes):
            return [classes[i] for i in np.argmax(array, axis=1).tolist()]
    return []
