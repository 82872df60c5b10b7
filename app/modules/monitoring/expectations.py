"""Data expectations fitted on a version's reference profile, and the served inputs breaking them.

:func:`fit` reads the profile training registered (every column described over all the
training rows, and a sample of them): a categorical column may take the categories it took, a
numerical one stays within its range widened by a tolerance, and no column may be missing
more often than in the sample (plus a tolerance). The same expectations are what a feature
view can be given (``PUT /v1/features/views/{name}/expectations``) and what
:func:`count_violations` checks the sampled inputs of served predictions against.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec
import numpy as np

from contracts.features import Expectation
from contracts.monitoring import FeatureViolations
from contracts.registry import ReferenceProfile

__all__ = ["count_violations", "fit", "for_view"]


def fit(
    profile: ReferenceProfile, *, tolerance: float = 0.1, null_tolerance: float = 0.05
) -> list[Expectation]:
    """One expectation per profiled column, in column order (columns without data get none)."""
    sample = np.asarray(profile.sample.to_numpy(), dtype=np.float64)
    index = {name: i for i, name in enumerate(profile.columns)}
    found = []
    for column in profile.profiles:
        i = index.get(column.name)
        values = sample[:, i] if i is not None and len(sample) else np.empty(0)
        missing = float(np.isnan(values).mean()) if len(values) else 0.0
        null_share = min(1.0, missing + null_tolerance)
        if column.kind == "categorical" and column.frequencies:
            found.append(
                Expectation(
                    feature=column.name,
                    dtype="int",
                    categories=sorted(column.frequencies, key=_number),
                    max_null_share=null_share,
                )
            )
        elif column.histogram is not None and column.histogram.edges:
            low, high = column.histogram.edges[0], column.histogram.edges[-1]
            margin = (high - low) * tolerance or max(abs(low), abs(high), 1.0) * tolerance
            found.append(
                Expectation(
                    feature=column.name,
                    min=low - margin,
                    max=high + margin,
                    max_null_share=null_share,
                )
            )
    return found


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def for_view(expectations: Sequence[Expectation], view: str) -> list[Expectation]:
    """Those naming a column ``feature`` or ``view:feature``, renamed ``feature``."""
    kept = []
    for rule in expectations:
        name = rule.feature
        prefix, sep, feature = name.partition(":")
        if sep and prefix == view and feature:
            kept.append(msgspec.structs.replace(rule, feature=feature))
        elif not sep:
            kept.append(rule)
    return kept


def count_violations(
    version: int,
    columns: Sequence[str],
    expectations: Sequence[Expectation],
    inputs: np.ndarray,
) -> list[FeatureViolations]:
    """The values of ``inputs`` (``[rows, len(columns)]``) breaking ``expectations``, per
    column with at least one, by kind: ``category`` (a value no training row had), ``range``
    (outside the fitted bounds), ``null`` (every missing value, when more are missing than the
    fitted null share allows)."""
    index = {name: i for i, name in enumerate(columns)}
    rows = len(inputs)
    found = []
    for rule in expectations:
        i = index.get(rule.feature)
        if i is None or not rows:
            continue
        values = inputs[:, i]
        missing = np.isnan(values)
        present = values[~missing]
        kinds: Counter[str] = Counter()
        if rule.max_null_share is not None and missing.mean() > rule.max_null_share:
            kinds["null"] = int(missing.sum())
        if rule.categories is not None:
            allowed = np.array([float(c) for c in rule.categories if _number(c) != float("inf")])
            kinds["category"] = int((~np.isin(present, allowed)).sum())
        else:
            low = -np.inf if rule.min is None else rule.min
            high = np.inf if rule.max is None else rule.max
            kinds["range"] = int(((present < low) | (present > high)).sum())
        count = sum(kinds.values())
        if count:
            found.append(
                FeatureViolations(
                    version=version,
                    feature=rule.feature,
                    count=count,
                    rows=rows,
                    kinds={k: v for k, v in kinds.items() if v},
                )
            )
    return found
