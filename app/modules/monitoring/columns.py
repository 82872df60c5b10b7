"""Model input columns back to the columns the user knows: one-hot groups become one
categorical column (see :func:`user_columns`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["NO_CATEGORY", "user_columns"]

NO_CATEGORY = "(none)"
"""The value of a one-hot feature on a row where every one of its columns is 0."""


def user_columns(
    columns: Sequence[str], kinds: Sequence[str], *sides: np.ndarray
) -> tuple[list[str], list[str], list[np.ndarray]]:
    """The columns as the user sent them: each group of one-hot columns ``<name>=<category>``
    (2 or more, every value 0, 1 or NaN on every side) becomes one categorical column ``<name>``
    holding the category of the row (:data:`NO_CATEGORY` when none is 1), in the place of its
    first column; other columns stay as they are. Answers names, kinds and each side
    (``[n, len(names)]``, an object array when a group was merged)."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(columns):
        base, equals, category = name.partition("=")
        if equals and base and category:
            groups.setdefault(base, []).append(i)
    merged = {
        base: indices
        for base, indices in groups.items()
        if len(indices) > 1 and all(_zeros_and_ones(side[:, indices]) for side in sides)
    }
    if not merged:
        return list(columns), list(kinds), [np.asarray(side) for side in sides]
    first = {indices[0]: base for base, indices in merged.items()}
    inside = {i for indices in merged.values() for i in indices}
    names: list[str] = []
    out_kinds: list[str] = []
    picks: list[int | list[int]] = []
    for i, name in enumerate(columns):
        if i in first:
            names.append(first[i])
            out_kinds.append("categorical")
            picks.append(merged[first[i]])
        elif i not in inside:
            names.append(name)
            out_kinds.append(kinds[i])
            picks.append(i)
    out = []
    for side in sides:
        table = np.empty((side.shape[0], len(names)), dtype=object)
        for j, pick in enumerate(picks):
            table[:, j] = (
                _category_of(side, pick, columns) if isinstance(pick, list) else side[:, pick]
            )
        out.append(table)
    return names, out_kinds, out


def _zeros_and_ones(block: np.ndarray) -> bool:
    values = np.asarray(block, dtype=np.float64)
    return bool(np.all(np.isnan(values) | (values == 0) | (values == 1)))


def _category_of(side: np.ndarray, indices: list[int], columns: Sequence[str]) -> np.ndarray:
    block = np.nan_to_num(np.asarray(side[:, indices], dtype=np.float64))
    categories = np.array([columns[i].partition("=")[2] for i in indices] + [NO_CATEGORY])
    hot = np.where(block.max(axis=1) > 0, block.argmax(axis=1), len(indices))
    return categories[hot].astype(object)
