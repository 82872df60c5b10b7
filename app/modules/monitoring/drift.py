"""Column, dataset and prediction drift with Evidently's default test selection (scipy.stats).

Numerical columns: Kolmogorov-Smirnov (p-value <= 0.05 is drift) when the reference has at most
1,000 rows, else the Wasserstein distance divided by the reference std (>= 0.1 is drift).
Categorical columns: chi-square on the category counts (p-value <= 0.05) up to 1,000 reference
rows, else the Jensen-Shannon distance (base 2) of the two frequency vectors (>= 0.1). The
population stability index is an optional extra figure for numerical columns; it never changes
the verdict.

Columns are tested as the user knows them (:func:`user_columns`): the one-hot columns of a
feature service transform (``<feature>=<category>``, 0/1 values) are one categorical column
``<feature>`` whose value is the category, so a one-hot feature counts once in the drifted share.
Standardized (z-scored) columns are tested as they are: shifting and scaling both sides alike
changes none of the tests above, so the verdict is the raw column's (their charts show
standardized units: the reference profile does not keep the fitted mean and std).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from typing import Literal

import msgspec
import numpy as np

from app.modules.monitoring.columns import user_columns
from contracts.monitoring import FeatureDrift

__all__ = [
    "LARGE_REFERENCE_ROWS",
    "category_labels",
    "column_drift",
    "dataset_drift",
    "population_stability_index",
    "prediction_drift",
    "prediction_values",
    "user_columns",
]

LARGE_REFERENCE_ROWS = 1000
"""Above this many reference rows the distance tests replace the statistical ones."""

P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
PSI_BINS = 10
PSI_EPSILON = 1e-4
CHI_SQUARE_SMOOTHING = 0.5
"""Counts given to a category the reference lacks, so that its expected frequency is not 0."""

Kind = Literal["numerical", "categorical"]


def column_drift(
    name: str,
    kind: Kind,
    reference: np.ndarray,
    current: np.ndarray,
    *,
    psi: bool = False,
) -> FeatureDrift:
    """Test one column: ``reference`` and ``current`` are its 1-D values, NaNs are dropped
    (numerical columns drop infinities too). ``ValueError`` when either side is then empty."""
    if kind == "numerical":
        ref, cur = _numbers(reference, name, "reference"), _numbers(current, name, "current")
        drift = _numerical(name, ref, cur)
        if psi:
            drift = msgspec.structs.replace(drift, psi=population_stability_index(ref, cur))
        return drift
    if kind == "categorical":
        return _categorical(
            name, _categories(reference, name, "reference"), _categories(current, name, "current")
        )
    raise ValueError(f"unknown column kind {kind!r} for {name!r}")


def dataset_drift(
    reference: np.ndarray,
    current: np.ndarray,
    columns: Sequence[str],
    kinds: Sequence[str],
    *,
    psi: bool = False,
    share_threshold: float = 0.5,
) -> tuple[list[FeatureDrift], float, bool]:
    """Test every column of ``reference`` and ``current`` (``[n, len(columns)]`` each).

    Returns the per-column results, the share of drifted columns and whether that share reaches
    ``share_threshold`` (dataset drift). No columns is no drift.
    """
    ref, cur = np.asarray(reference), np.asarray(current)
    width = len(columns)
    if len(kinds) != width:
        raise ValueError(f"{width} columns but {len(kinds)} kinds")
    for side, data in (("reference", ref), ("current", cur)):
        if data.ndim != 2 or data.shape[1] != width:
            raise ValueError(f"{side} must be [n, {width}], got {list(data.shape)}")
    columns, kinds, (ref, cur) = user_columns(columns, kinds, ref, cur)
    features = [
        column_drift(name, _kind(kind), ref[:, i], cur[:, i], psi=psi)
        for i, (name, kind) in enumerate(zip(columns, kinds, strict=True))
    ]
    if not features:
        return features, 0.0, False
    share = sum(f.drifted for f in features) / len(features)
    return features, share, share >= share_threshold


def prediction_drift(
    reference: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    *,
    psi: bool = False,
) -> FeatureDrift | None:
    """Drift of the model output, named ``"prediction"`` (see :func:`prediction_values`);
    ``None`` when neither output is in both mappings."""
    values = prediction_values(reference, current)
    if values is None:
        return None
    kind, ref, cur = values
    return column_drift("prediction", kind, ref, cur, psi=psi)


def prediction_values(
    reference: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray]
) -> tuple[Kind, np.ndarray, np.ndarray] | None:
    """The model output both sides have, as a column: a classifier's ``probabilities``
    (``[n, C]``; a 1-D array is the positive class's) become the predicted class
    (categorical), a regressor's ``prediction`` stays a number. ``None`` when neither is in both.
    """
    if "probabilities" in reference and "probabilities" in current:
        return (
            "categorical",
            _predicted_class(reference["probabilities"]),
            _predicted_class(current["probabilities"]),
        )
    if "prediction" in reference and "prediction" in current:
        return (
            "numerical",
            np.asarray(reference["prediction"], dtype=np.float64).ravel(),
            np.asarray(current["prediction"], dtype=np.float64).ravel(),
        )
    return None


def population_stability_index(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI over 10 quantile bins of ``reference`` (values outside fall in the end bins); empty
    bins count as a share of 1e-4."""
    edges = np.unique(np.quantile(reference, np.linspace(0.0, 1.0, PSI_BINS + 1))[1:-1])
    ref_share = _bin_shares(reference, edges)
    cur_share = _bin_shares(current, edges)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


# --- tests ----------------------------------------------------------------------------------


def _numerical(name: str, ref: np.ndarray, cur: np.ndarray) -> FeatureDrift:
    from scipy import stats  # imported on first use: scipy.stats takes seconds to import

    if len(ref) <= LARGE_REFERENCE_ROWS:
        result = stats.ks_2samp(ref, cur)
        return _by_p_value(name, "ks", (result.statistic, result.pvalue), ref, cur)
    std = float(np.std(ref))
    value = float(stats.wasserstein_distance(ref, cur)) / (std if std > 0 else 1.0)
    return _by_distance(name, "wasserstein_normed", value, ref, cur)


def _categorical(name: str, ref: np.ndarray, cur: np.ndarray) -> FeatureDrift:
    from scipy import stats  # imported on first use, as in _numerical
    from scipy.spatial import distance

    labels = np.union1d(ref, cur)
    ref_counts = _counts(ref, labels)
    cur_counts = _counts(cur, labels)
    if len(ref) > LARGE_REFERENCE_ROWS:
        value = distance.jensenshannon(
            ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum(), base=2
        )
        return _by_distance(name, "jensenshannon", value, ref, cur)
    if len(labels) < 2:  # one category on both sides: nothing changed
        return _by_p_value(name, "chisquare", (0.0, 1.0), ref, cur)
    smoothed = np.where(ref_counts > 0, ref_counts, CHI_SQUARE_SMOOTHING)
    expected = smoothed / smoothed.sum() * cur_counts.sum()
    result = stats.chisquare(cur_counts, expected)
    return _by_p_value(name, "chisquare", (result.statistic, result.pvalue), ref, cur)


def _by_p_value(
    name: str, test: str, result: tuple[float, float], ref: Sized, cur: Sized
) -> FeatureDrift:
    """A p-value at or below 0.05 is drift; ``result`` is (statistic, p-value)."""
    statistic, p_value = result
    kind: Kind = "numerical" if test == "ks" else "categorical"
    return FeatureDrift(
        name=name,
        kind=kind,
        test=test,
        statistic=float(statistic),
        threshold=P_VALUE_THRESHOLD,
        drifted=bool(p_value <= P_VALUE_THRESHOLD),
        p_value=float(p_value),
        reference_rows=len(ref),
        current_rows=len(cur),
    )


def _by_distance(name: str, test: str, value: float, ref: Sized, cur: Sized) -> FeatureDrift:
    """A distance at or above 0.1 is drift; the kind follows from the test."""
    kind: Kind = "numerical" if test == "wasserstein_normed" else "categorical"
    return FeatureDrift(
        name=name,
        kind=kind,
        test=test,
        statistic=float(value),
        threshold=DISTANCE_THRESHOLD,
        drifted=bool(value >= DISTANCE_THRESHOLD),
        reference_rows=len(ref),
        current_rows=len(cur),
    )


# --- values ---------------------------------------------------------------------------------


def _numbers(values: np.ndarray, name: str, side: str) -> np.ndarray:
    column = np.asarray(values, dtype=np.float64).ravel()
    column = column[np.isfinite(column)]
    if not len(column):
        raise ValueError(f"column {name!r} has no {side} values")
    return column


def _categories(values: np.ndarray, name: str, side: str) -> np.ndarray:
    labels = category_labels(values)
    if not len(labels):
        raise ValueError(f"column {name!r} has no {side} values")
    return labels


def category_labels(values: np.ndarray) -> np.ndarray:
    """Categorical values as the text they are compared by: integral numbers without ``.0``
    (``1.0`` reads ``"1"``), anything else as ``str``; NaN and None are dropped."""
    column = np.asarray(values).ravel()
    if column.dtype == object and all(isinstance(v, (int, float, np.number)) for v in column):
        column = column.astype(np.float64)  # a numeric column of a merged table
    if column.dtype.kind in "fiub":
        numbers = column.astype(np.float64)
        distinct, inverse = np.unique(numbers[~np.isnan(numbers)], return_inverse=True)
        labels = np.array([_number_text(v) for v in distinct], dtype=str)[inverse]
    else:
        labels = np.array([str(v) for v in column if not _missing(v)], dtype=str)
    return labels


def _number_text(value: float) -> str:
    if np.isfinite(value) and value == np.round(value):
        return str(int(value))
    return repr(float(value))


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _counts(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(labels, values), minlength=len(labels)).astype(np.float64)


def _bin_shares(values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(
        np.searchsorted(inner_edges, values, side="right"), minlength=len(inner_edges) + 1
    )
    shares = counts / len(values)
    return np.where(shares > 0, shares, PSI_EPSILON)


def _predicted_class(probabilities: np.ndarray) -> np.ndarray:
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.ndim == 1:
        return (proba >= 0.5).astype(np.int64)
    return np.asarray(np.argmax(proba.reshape(len(proba), -1), axis=1))


def _kind(kind: str) -> Kind:
    if kind == "numerical":
        return "numerical"
    if kind == "categorical":
        return "categorical"
    raise ValueError(f"unknown column kind {kind!r}; expected numerical or categorical")
