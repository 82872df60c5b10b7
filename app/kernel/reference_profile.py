"""Reference profiles: what monitoring compares traffic with (built by training, and by the
registry from uploaded rows).

numpy only. The profile holds a seeded sample of the training inputs with the model's outputs on
them, and describes every input column over all the training rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, cast

import numpy as np

from contracts.common import InvalidInput, Tensor
from contracts.registry import ColumnProfile, Histogram, ReferenceProfile

__all__ = ["MAX_CATEGORIES", "column_profile", "reference_profile"]

MAX_CATEGORIES = 10
"""A column with at most this many distinct values, all integers, is categorical."""


def reference_profile(
    columns: list[str],
    x: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    *,
    task: str | None,
    seed: int,
    max_rows: int = 5000,
    bins: int = 20,
) -> ReferenceProfile:
    """The profile of the model inputs ``x`` (``[n, len(columns)]``) and the model's outputs
    ``predictions`` (each ``[n, ...]``).

    ``sample`` holds at most ``max_rows`` rows drawn without replacement with ``seed`` (in their
    original order), as float32, and ``predictions`` the matching outputs. Every column gets a
    :func:`column_profile` over all ``n`` rows.
    """
    if task not in (None, "classification", "regression"):
        raise InvalidInput(f"unknown task {task!r}; expected classification or regression")
    data = np.asarray(x, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != len(columns):
        raise InvalidInput(
            f"the inputs must be [n, {len(columns)}] for {len(columns)} columns,"
            f" got {list(data.shape)}"
        )
    rows = data.shape[0]
    for name, values in predictions.items():
        if len(values) != rows:
            raise InvalidInput(f"prediction {name!r} has {len(values)} rows, the inputs {rows}")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(rows, size=min(rows, max_rows), replace=False))
    return ReferenceProfile(
        columns=list(columns),
        sample=Tensor.from_numpy(np.ascontiguousarray(data[picked])),
        predictions={
            name: Tensor.from_numpy(np.ascontiguousarray(np.asarray(values)[picked]))
            for name, values in predictions.items()
        },
        profiles=[column_profile(name, data[:, i], bins=bins) for i, name in enumerate(columns)],
        rows=rows,
        task=cast(Literal["classification", "regression"] | None, task),
    )


def column_profile(name: str, values: np.ndarray, *, bins: int = 20) -> ColumnProfile:
    """One column, NaNs ignored: categorical when it holds at most :data:`MAX_CATEGORIES`
    distinct values that are all integers (the share of each, keyed ``"0"``, ``"1"``...), else
    numerical (a ``bins``-bin histogram over the finite range, mean and std)."""
    column = np.asarray(values, dtype=np.float64)
    present = column[~np.isnan(column)]
    distinct, counts = np.unique(present, return_counts=True)
    integral = np.all(np.isfinite(distinct) & (distinct == np.round(distinct)))
    if 0 < len(distinct) <= MAX_CATEGORIES and integral:
        return ColumnProfile(
            name=name,
            kind="categorical",
            frequencies={
                _category(value): float(count) / len(present)
                for value, count in zip(distinct, counts, strict=True)
            },
        )
    finite = present[np.isfinite(present)]
    if not len(finite):
        return ColumnProfile(name=name, kind="numerical")
    hist, edges = np.histogram(finite, bins=bins, range=(finite.min(), finite.max()))
    return ColumnProfile(
        name=name,
        kind="numerical",
        histogram=Histogram(edges=[float(e) for e in edges], counts=[int(c) for c in hist]),
        mean=float(finite.mean()),
        std=float(finite.std()),
    )


def _category(value: float) -> str:
    """An integral value as text without a trailing ``.0`` (``-0.0`` reads ``0``)."""
    return str(int(value))
