"""Feature service transforms: validate them (:func:`plan`), fit them on a training split
(:func:`fit`) and turn raw feature rows into model inputs (:func:`apply`).

Training and serving run this same code, so online and offline vectors agree. Inside, a numeric
column is a float64 array with NaN for missing values (bools are 0/1), a string column an object
array with ``None`` for missing values, and one-hot and vector columns are 2-D float64 arrays.

``params`` (what :func:`fit` learns and :func:`apply` reads) holds one dict per transform, in
order, with ``kind``, ``input``, ``output`` and every statistic the transform applies (fitted or
given in the spec), then one last dict ``{"kind": "vector_dims", "<ref>": d, ...}`` with the
dimension of each ``float_vector`` feature. Every value is a contract ``Value``: one-hot
``categories`` are therefore JSON text (a list of strings).
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from app.modules.features.expressions import Expression, parse
from contracts.common import InvalidInput
from contracts.features import (
    Bucketize,
    Clip,
    Derived,
    FeatureDType,
    FillMissing,
    Log1p,
    MinMax,
    OneHot,
    Standardize,
    Transform,
    Value,
)

__all__ = ["apply", "fit", "plan"]

Params = dict[str, Value]

_NUMERIC = frozenset({"int", "float", "bool"})
_CATEGORICAL = frozenset({"int", "bool", "string"})
_DESCRIBED = {"one_hot": "one-hot encoded output", "float_vector": "float_vector feature"}
_parse = functools.lru_cache(maxsize=256)(parse)


def plan(
    features: Sequence[str], transforms: Sequence[Transform], dtypes: Mapping[str, FeatureDType]
) -> None:
    """Check ``transforms`` over ``features`` (``view:feature``, typed by ``dtypes``).

    ``InvalidInput`` names the transform's index and kind and what is wrong: an unknown input, an
    input of the wrong dtype, an output that collides, a bad spec, or a string feature that no
    ``one_hot`` consumes (the model input is a float32 matrix).
    """
    _check(features, transforms, dtypes)


def fit(
    features: Sequence[str],
    transforms: Sequence[Transform],
    dtypes: Mapping[str, FeatureDType],
    columns: Mapping[str, Sequence[Value]],
) -> tuple[list[Params], list[str]]:
    """Fit ``transforms`` on training ``columns`` (``ref`` -> one raw value per row; None missing).

    Answers ``(params, model input column names)``. Missing and non-finite values are ignored
    when fitting; ``InvalidInput`` names the transform when a statistic has nothing to learn from.
    """
    input_kinds = _check(features, transforms, dtypes)
    dims: Params = {"kind": "vector_dims"}
    for ref in features:
        if dtypes[ref] == "float_vector":
            dims[ref] = _fit_dimension(ref, columns.get(ref, []))
    table = _load(features, dtypes, columns, dims)
    params: list[Params] = []
    for index, transform in enumerate(transforms):
        with _naming(index, transform):
            fitted = _fit_one(transform, input_kinds[index], table)
            _step(transform, input_kinds[index], fitted, table)
        params.append(fitted)
    params.append(dims)
    return params, _assemble(table)[0]


def apply(  # noqa: PLR0917 - callers pass the service, the state and the rows in order
    features: Sequence[str],
    transforms: Sequence[Transform],
    dtypes: Mapping[str, FeatureDType],
    params: Sequence[Mapping[str, Value]],
    columns: Sequence[str],
    rows: Mapping[str, Sequence[Value]],
) -> np.ndarray:
    """Model inputs for raw ``rows`` (``ref`` -> one value per row) under fitted ``params``.

    Answers float32 ``[rows, len(columns)]`` in the order of ``columns``. Nothing is refitted:
    an unseen one-hot category sets none of its columns, a missing value stays NaN unless a
    ``fill_missing`` replaces it.
    """
    input_kinds = _check(features, transforms, dtypes)
    kinds = [_kind(transform) for transform in transforms] + ["vector_dims"]
    if [entry.get("kind") for entry in params] != kinds:
        raise InvalidInput("the transform state does not match the feature service's transforms")
    table = _load(features, dtypes, rows, params[-1])
    for index, transform in enumerate(transforms):
        with _naming(index, transform):
            _step(transform, input_kinds[index], params[index], table)
    names, matrix = _assemble(table)
    if names != list(columns):
        raise InvalidInput("the transform state's columns do not match the feature service")
    return matrix


# --- validation -----------------------------------------------------------------------------


def _check(
    features: Sequence[str], transforms: Sequence[Transform], dtypes: Mapping[str, FeatureDType]
) -> list[str]:
    """Validate; answers the dtype of each transform's input (``float`` for derived)."""
    if not features:
        raise InvalidInput("a feature service needs at least one feature")
    kinds: dict[str, str] = {}
    for ref in features:
        if ref in kinds:
            raise InvalidInput(f"feature {ref!r} is listed twice")
        if ref not in dtypes:
            raise InvalidInput(f"feature {ref!r} has no dtype")
        kinds[ref] = dtypes[ref]
    unconsumed = {ref for ref, kind in kinds.items() if kind == "string"}
    input_kinds: list[str] = []
    for index, transform in enumerate(transforms):
        with _naming(index, transform):
            input_kind, output_kind = _check_one(transform, kinds)
        name = _name(transform)
        if not isinstance(transform, Derived):
            unconsumed.discard(transform.input)
        if output_kind == "string":
            unconsumed.add(name)
        kinds[name] = output_kind
        input_kinds.append(input_kind)
    for name in kinds:
        if name in unconsumed:
            raise InvalidInput(
                f"string feature {name!r} is not consumed by a one_hot transform: the model "
                "input is a float32 matrix, so add a one_hot for it"
            )
    return input_kinds


def _check_one(transform: Transform, kinds: Mapping[str, str]) -> tuple[str, str]:
    """Validate one transform against the names before it; answers (input, output) dtypes."""
    if isinstance(transform, Derived):
        _check_derived(transform, kinds)
        return "float", "float"
    source, kind = transform.input, kinds.get(transform.input)
    if kind is None:
        raise InvalidInput(f"input {source!r} is not a feature of the service or an earlier output")
    _check_output(transform.output, source, kinds)
    if isinstance(transform, OneHot):
        _check_one_hot(transform, kind)
        return kind, "one_hot"
    if isinstance(transform, FillMissing):
        return kind, _check_fill(transform, kind)
    if kind not in _NUMERIC:
        raise InvalidInput(
            f"input {source!r} is {_describe(kind)}; {_kind(transform)} needs int, float or bool"
        )
    low, high = getattr(transform, "min", None), getattr(transform, "max", None)
    if low is not None and high is not None and low > high:
        raise InvalidInput(f"min {low} is above max {high}")
    if isinstance(transform, Bucketize):
        if transform.buckets < 2:
            raise InvalidInput(f"buckets must be at least 2, not {transform.buckets}")
        bounds = transform.boundaries
        if bounds is not None and (not bounds or any(a >= b for a, b in pairwise(bounds))):
            raise InvalidInput(f"boundaries must be strictly ascending and not empty: {bounds}")
        return kind, "int"
    return kind, "float"


def _check_derived(transform: Derived, kinds: Mapping[str, str]) -> None:
    if not transform.output:
        raise InvalidInput("output must not be empty")
    for name in sorted(_parse(transform.expression).references):
        if name not in kinds:
            raise InvalidInput(
                f"expression {transform.expression!r} references {name!r}, which is not a "
                "feature of the service or an earlier output"
            )
        if kinds[name] not in _NUMERIC:
            raise InvalidInput(f"expression references {name!r}, {_describe(kinds[name])}")
    _check_output(transform.output, None, kinds)


def _check_one_hot(transform: OneHot, kind: str) -> None:
    if kind not in _CATEGORICAL:
        raise InvalidInput(
            f"input {transform.input!r} is {_describe(kind)}; one_hot needs string, int or bool"
        )
    if transform.max_categories < 1:
        raise InvalidInput(f"max_categories must be at least 1, not {transform.max_categories}")
    given = transform.categories
    if given is not None and (not given or len(set(given)) != len(given)):
        raise InvalidInput(f"categories must be distinct and not empty: {given}")


def _check_output(output: str | None, source: str | None, kinds: Mapping[str, str]) -> None:
    if output is not None and output != source and output in kinds:
        raise InvalidInput(f"output {output!r} collides with a feature or an earlier output")


def _check_fill(transform: FillMissing, kind: str) -> str:
    if kind not in _CATEGORICAL | _NUMERIC:
        raise InvalidInput(f"input {transform.input!r} is {_describe(kind)}; it cannot be filled")
    value = transform.value
    if transform.strategy != "value":
        if value is not None:
            raise InvalidInput(f"give a value or a strategy, not both ({transform.strategy})")
        if kind == "string" and transform.strategy != "mode":
            raise InvalidInput(f"strategy {transform.strategy!r} needs a numeric input")
        return kind if transform.strategy == "mode" else "float"
    if value is None:
        raise InvalidInput("needs a value, or a strategy mean, median or mode")
    if (kind == "string") != isinstance(value, str) or isinstance(value, list):
        raise InvalidInput(f"value {value!r} does not fit the {kind} input {transform.input!r}")
    fits = (kind == "bool") == isinstance(value, bool) and (
        kind != "int" or float(value).is_integer()
    )
    return kind if fits else "float"


def _describe(kind: str) -> str:
    return "a " + _DESCRIBED.get(kind, f"{kind} feature")


def _name(transform: Transform) -> str:
    """The column a transform writes: its output, else its input (replaced in place)."""
    return transform.output or ("" if isinstance(transform, Derived) else transform.input)


def _kind(transform: Transform) -> str:
    return str(transform.__struct_config__.tag)


@contextmanager
def _naming(index: int, transform: Transform) -> Iterator[None]:
    """Prefixes an ``InvalidInput`` raised inside with the transform's index and kind."""
    try:
        yield
    except InvalidInput as error:
        where = f"transform {index} ({_kind(transform)})"
        raise InvalidInput(f"{where}: {error.message}", details=error.details) from None


# --- columns --------------------------------------------------------------------------------


@dataclass
class _Table:
    """The columns so far, in model input order; ``labels`` names the parts of 2-D columns."""

    rows: int
    data: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)


def _load(
    features: Sequence[str],
    dtypes: Mapping[str, FeatureDType],
    raw: Mapping[str, Sequence[Value]],
    dims: Mapping[str, Value],
) -> _Table:
    missing = [ref for ref in features if ref not in raw]
    if missing:
        raise InvalidInput(f"the rows have no values for feature {missing[0]!r}")
    table = _Table(rows=len(raw[features[0]]))
    for ref in features:
        values = raw[ref]
        if len(values) != table.rows:
            raise InvalidInput(f"feature {ref!r} has {len(values)} values for {table.rows} rows")
        if dtypes[ref] == "string":
            table.data[ref] = np.fromiter(values, dtype=object, count=table.rows)
        elif dtypes[ref] == "float_vector":
            # the "vector_dims" params hold the int _fit_dimension found for each vector ref
            dim = int(dims[ref])  # type: ignore[arg-type]
            table.data[ref] = _load_vectors(ref, values, dim)
            table.labels[ref] = [f"{ref}[{i}]" for i in range(dim)]
        else:
            table.data[ref] = _load_numbers(ref, values)
    return table


def _number(value: Value) -> float:
    if value is None:
        return math.nan
    if not isinstance(value, int | float):
        raise TypeError(value)
    return float(value)


def _load_numbers(ref: str, values: Sequence[Value]) -> np.ndarray:
    try:
        return np.fromiter(map(_number, values), dtype=np.float64, count=len(values))
    except TypeError:
        row = next(i for i, value in enumerate(values) if not _is_number(value))
        raise InvalidInput(f"feature {ref!r} row {row}: {values[row]!r} is not a number") from None


def _is_number(value: Value) -> bool:
    return value is None or isinstance(value, int | float)


def _load_vectors(ref: str, values: Sequence[Value], dim: int) -> np.ndarray:
    out = np.full((len(values), dim), np.nan)
    present = [i for i, value in enumerate(values) if value is not None]
    for i in present:
        value = values[i]
        if not isinstance(value, list | tuple | np.ndarray) or len(value) != dim:
            size = len(value) if isinstance(value, list | tuple | np.ndarray) else value
            raise InvalidInput(f"feature {ref!r} row {i}: a vector of {dim} values, not {size!r}")
    if present:
        out[present] = np.asarray([values[i] for i in present], dtype=np.float64)
    return out


def _fit_dimension(ref: str, values: Sequence[Value]) -> int:
    """The most common vector length (the longer one on a tie)."""
    lengths = Counter(len(value) for value in values if isinstance(value, list | tuple))
    if not lengths:
        raise InvalidInput(f"feature {ref!r} has no vectors to learn their dimension from")
    return max(lengths.items(), key=lambda item: (item[1], item[0]))[0]


def _assemble(table: _Table) -> tuple[list[str], np.ndarray]:
    """Column names and the float32 matrix of every column that is not a string."""
    parts = [(name, column) for name, column in table.data.items() if column.dtype != object]
    names: list[str] = []
    for name, column in parts:
        names.extend(table.labels[name] if column.ndim == 2 else [name])
    matrix = np.empty((table.rows, len(names)), dtype=np.float32)
    start = 0
    for _, column in parts:
        width = column.shape[1] if column.ndim == 2 else 1
        matrix[:, start : start + width] = column.reshape(table.rows, width)
        start += width
    return names, matrix


# --- fitting --------------------------------------------------------------------------------


def _fit_one(transform: Transform, input_kind: str, table: _Table) -> Params:
    """The params of one transform: the spec's values, and statistics fitted on ``table``."""
    if isinstance(transform, Derived):
        return {"kind": "derived", "output": transform.output, "expression": transform.expression}
    params: Params = {
        "kind": _kind(transform),
        "input": transform.input,
        "output": transform.output,
    }
    column = table.data[transform.input]
    if isinstance(transform, Standardize):
        known = _known(transform.input, column, "mean and std")
        std = float(known.std())
        params |= {"mean": float(known.mean()), "std": std if std > 0 else 1.0}
    elif isinstance(transform, MinMax):
        known = _known(transform.input, column, "min and max")
        params |= {"min": float(known.min()), "max": float(known.max())}
    elif isinstance(transform, Clip):
        params |= {"min": transform.min, "max": transform.max}
    elif isinstance(transform, Bucketize):
        boundaries = transform.boundaries
        if boundaries is None:
            known = _known(transform.input, column, "bucket boundaries")
            quantiles = np.arange(1, transform.buckets) / transform.buckets
            boundaries = np.unique(np.quantile(known, quantiles)).tolist()
        params["boundaries"] = [float(bound) for bound in boundaries]
    elif isinstance(transform, OneHot):
        categories = transform.categories
        if categories is None:
            counts = _counts(transform.input, column, input_kind, "categories")
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            categories = sorted(label for label, _ in ranked[: transform.max_categories])
        params["categories"] = json.dumps(categories)
    elif isinstance(transform, FillMissing):
        params["value"] = _fill_value(transform, input_kind, column)
    return params


def _known(name: str, column: np.ndarray, what: str) -> np.ndarray:
    """The finite values of a numeric column; ``InvalidInput`` when there are none."""
    known: np.ndarray = column[np.isfinite(column)]
    if not known.size:
        raise InvalidInput(f"input {name!r} has no values to fit {what} on ({len(column)} rows)")
    return known


def _counts(name: str, column: np.ndarray, kind: str, what: str) -> Counter[str]:
    """How often each category label occurs, missing values left out."""
    if kind == "string":
        counts = Counter(value for value in column if value is not None)
    else:
        values, frequencies = np.unique(column[~np.isnan(column)], return_counts=True)
        labels = [_label(value, kind) for value in values.tolist()]
        counts = Counter(dict(zip(labels, frequencies.tolist(), strict=True)))
    if not counts:
        raise InvalidInput(f"input {name!r} has no values to fit {what} on ({len(column)} rows)")
    return counts


def _label(value: float, kind: str) -> str:
    """The category label of a number: ``true``/``false`` for bools, ``3`` for ints."""
    if kind == "bool":
        return "true" if value else "false"
    return str(int(value)) if float(value).is_integer() else repr(value)


def _fill_value(transform: FillMissing, kind: str, column: np.ndarray) -> Value:
    if transform.strategy == "value":
        return transform.value
    if transform.strategy == "mode":
        counts = _counts(transform.input, column, kind, "the mode")
        label = min(counts, key=lambda item: (-counts[item], item))
        if kind == "string":
            return label
        return 1.0 if label == "true" else 0.0 if label == "false" else float(label)
    known = _known(transform.input, column, f"the {transform.strategy}")
    return float(np.mean(known) if transform.strategy == "mean" else np.median(known))


# --- applying -------------------------------------------------------------------------------


def _step(transform: Transform, input_kind: str, params: Mapping[str, Any], table: _Table) -> None:
    """Apply one transform with its ``params``, writing its output column into ``table``."""
    if isinstance(transform, Derived):
        expression: Expression = _parse(params["expression"])
        result = expression.evaluate({name: table.data[name] for name in expression.references})
        table.data[transform.output] = np.broadcast_to(result, (table.rows,)).copy()
        return
    column, name = table.data[transform.input], _name(transform)
    with np.errstate(all="ignore"):
        if isinstance(transform, Standardize):
            out = (column - params["mean"]) / params["std"]
        elif isinstance(transform, MinMax):
            scale = params["max"] - params["min"]
            out = (column - params["min"]) / (scale if scale != 0 else 1.0)
        elif isinstance(transform, Log1p):
            below = np.flatnonzero(column < -1)
            if below.size:
                row = int(below[0])
                raise InvalidInput(
                    f"log1p of {transform.input!r} needs values >= -1, row {row} has {column[row]}"
                )
            out = np.log1p(column)
        elif isinstance(transform, Clip):
            low, high = params["min"], params["max"]
            out = column if low is None else np.maximum(column, low)
            out = out if high is None else np.minimum(out, high)
        elif isinstance(transform, Bucketize):
            out = np.searchsorted(params["boundaries"], column, side="right").astype(np.float64)
            out[np.isnan(column)] = np.nan
        elif isinstance(transform, OneHot):
            categories = json.loads(params["categories"])
            out = _one_hot(column, input_kind, categories)
            table.labels[name] = [f"{name}={category}" for category in categories]
        else:
            out = _fill(column, params["value"])
    table.data[name] = out


def _one_hot(column: np.ndarray, kind: str, categories: list[str]) -> np.ndarray:
    if kind == "string":
        lookup = {category: i for i, category in enumerate(categories)}
        index = np.fromiter((lookup.get(value, -1) for value in column), np.intp, len(column))
    else:
        keys = np.array([_category_number(category, kind) for category in categories])
        order = np.argsort(keys)
        found = np.minimum(np.searchsorted(keys[order], column), len(keys) - 1)
        index = np.where(keys[order][found] == column, order[found], -1)
    out = np.zeros((len(column), len(categories)))
    hits = np.flatnonzero(index >= 0)
    out[hits, index[hits]] = 1.0
    return out


def _category_number(category: str, kind: str) -> float:
    """The number a category label stands for (NaN, never matched, when it is not one)."""
    if kind == "bool":
        return {"true": 1.0, "false": 0.0}.get(category, math.nan)
    try:
        return float(category)
    except ValueError:
        return math.nan


def _fill(column: np.ndarray, value: Value) -> np.ndarray:
    if column.dtype == object:
        return np.fromiter((value if v is None else v for v in column), object, len(column))
    # a numeric column's fill value is a number: fitted, or given and checked by _check_fill
    return np.where(np.isnan(column), float(value), column)  # type: ignore[arg-type]
