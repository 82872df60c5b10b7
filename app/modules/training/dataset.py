"""A job's dataset: raw rows and labels, split, then turned into model inputs.

Rows come from the feature store (historical retrieval of the feature service's features for the
entity rows, point-in-time), inline, or from a plain table (a file or database ``source``, read
column by column into arrays: :mod:`app.modules.training.table`). Model inputs come from the
feature service's transforms, fitted on the training split only (through the features contract),
or, without a feature service, straight from the named numeric columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import numpy as np

from contracts.common import InvalidInput
from contracts.features import (
    FeaturesService,
    FitTransforms,
    GetFeatureService,
    GetHistoricalFeatures,
    TransformRows,
    Value,
)
from contracts.training import Dataset, Split

if TYPE_CHECKING:
    from app.kernel.sources import SourcePolicy

__all__ = ["JobFailed", "Prepared", "encode_labels", "load_rows", "prepare", "split_rows"]

T = TypeVar("T")
Call = Callable[[Callable[[], Awaitable[T]]], T]
"""Runs an async contract call on the module's event loop from a worker thread."""


class JobFailed(Exception):
    """The job cannot succeed; the message is the reason shown on the job."""


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A dataset ready for a trainer, and what the registered version must remember."""

    x_train: np.ndarray
    x_valid: np.ndarray
    y_train: np.ndarray
    y_valid: np.ndarray
    valid_rows: list[dict[str, Value]]
    columns: list[str]
    classes: list[str] | None
    feature_service: str | None
    transform_state: str | None
    digest: str
    rows: int
    lineage: dict[str, str] = field(default_factory=dict)
    """What the version's lineage records of where the rows came from (a source)."""


def load_rows(
    dataset: Dataset, features: FeaturesService | None, call: Call[Any]
) -> tuple[list[dict[str, Value]], list[Value], list[str], str | None]:
    """Raw rows, their labels, the feature references and the feature service (``name:N``)."""
    service = None
    refs = list(dataset.features)
    if dataset.feature_service is not None:
        if features is None:
            raise JobFailed("the dataset names a feature service but no features module is bound")
        name, _, number = dataset.feature_service.partition(":")
        spec = call(
            lambda: features.get_service(
                GetFeatureService(name=name, version=int(number) if number.isdigit() else None)
            )
        )
        service, refs = f"{spec.name}:{spec.version}", list(spec.features)
    if dataset.entity_rows or dataset.entity_source is not None:
        if service is None or features is None:
            raise JobFailed("entity_rows need a feature_service to read the features from")
        wanted = [*refs, *([dataset.label] if ":" in dataset.label else [])]
        request = GetHistoricalFeatures(
            features=wanted, entity_rows=dataset.entity_rows, entity_source=dataset.entity_source
        )
        rows = call(lambda: _historical(features, request))
    else:
        rows = list(dataset.rows)
    if not rows:
        raise JobFailed("the dataset is empty: no rows to train on")
    missing = [i for i, row in enumerate(rows) if row.get(dataset.label) is None]
    if missing:
        raise JobFailed(
            f"{len(missing)} of {len(rows)} rows have no label {dataset.label!r}"
            f" (first: row {missing[0]})"
        )
    labels = [row[dataset.label] for row in rows]
    return rows, labels, refs, service


async def _historical(
    features: FeaturesService, request: GetHistoricalFeatures
) -> list[dict[str, Value]]:
    rows: list[dict[str, Value]] = []
    async for chunk in features.stream_historical(request):
        rows.extend(chunk.rows)
    return rows


def split_rows(n: int, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train and validation row indices (each non-empty)."""
    if not 0 < split.validation < 1:
        raise JobFailed("split.validation must be between 0 and 1")
    if n < 2:
        raise JobFailed(f"the dataset has {n} row(s): at least 2 are needed to split it")
    order = np.random.default_rng(split.seed).permutation(n)
    n_valid = min(n - 1, max(1, round(n * split.validation)))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def encode_labels(task: str, labels: Sequence[Value]) -> tuple[np.ndarray, list[str] | None]:
    """Class ids and class names (classification) or float targets (regression)."""
    if task == "classification":
        names = [_label_text(v) for v in labels]
        classes = sorted(set(names))
        if len(classes) < 2:
            raise JobFailed(f"classification needs at least 2 classes; the labels hold {classes}")
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[n] for n in names], dtype=np.int64), classes
    try:
        # float() is the check: a label that is no number raises TypeError or ValueError
        y = np.array([float(v) for v in labels], dtype=np.float32)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise JobFailed("regression labels must be numbers") from None
    if not np.isfinite(y).all():
        raise JobFailed("regression labels must be finite numbers")
    return y, None


def _label_text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def prepare(
    dataset: Dataset,
    split: Split,
    task: str,
    features: FeaturesService | None,
    call: Call[Any],
    *,
    sources: SourcePolicy | None = None,
) -> Prepared:
    """Load, split, fit transforms on the training split and build both input matrices.

    A dataset with a ``source`` is read under ``sources`` (the paths and databases allowed).
    """
    if dataset.source is not None:
        return _prepare_table(dataset, split, task, sources)
    rows, labels, refs, service = load_rows(dataset, features, call)
    y, classes = encode_labels(task, labels)
    train, valid = split_rows(len(rows), split)
    raw = [{ref: row.get(ref) for ref in refs} for row in rows]
    train_rows = [raw[i] for i in train]
    valid_rows = [raw[i] for i in valid]
    state = None
    if service is not None and features is not None:
        name, _, number = service.partition(":")
        fitted = call(
            lambda: features.fit_transforms(
                FitTransforms(service=name, version=int(number), rows=train_rows)
            )
        )
        state, columns = fitted.id, fitted.columns
        x_train = _vectors(features, call, state, train_rows)
        x_valid = _vectors(features, call, state, valid_rows)
    else:
        if not refs:
            raise JobFailed("the dataset names no features: give a feature_service or features")
        columns = refs
        x_train, x_valid = _columns(train_rows, refs), _columns(valid_rows, refs)
    _check_finite(x_train, columns)
    _check_finite(x_valid, columns)
    return Prepared(
        x_train=x_train,
        x_valid=x_valid,
        y_train=y[train],
        y_valid=y[valid],
        valid_rows=valid_rows,
        columns=columns,
        classes=classes,
        feature_service=service,
        transform_state=state,
        digest=_digest(raw, labels),
        rows=len(rows),
    )


def _prepare_table(
    dataset: Dataset, split: Split, task: str, sources: SourcePolicy | None
) -> Prepared:
    """A plain table's feature columns as they are, its label column encoded."""
    from app.modules.training.table import describe, read_table

    source = dataset.source
    if source is None or sources is None:
        raise JobFailed("the dataset's source cannot be read here: no source roots are known")
    refs = list(dataset.features)
    try:
        table = read_table(source, refs, dataset.label, task, sources)
    except InvalidInput as exc:
        raise JobFailed(f"the dataset's source: {exc.message}") from None
    if not table.labels:
        raise JobFailed("the dataset is empty: the source holds no rows")
    y, classes = encode_labels(task, table.labels)
    train, valid = split_rows(len(table.labels), split)
    x_train, x_valid = table.x[train], table.x[valid]
    _check_finite(x_train, refs, fix="fill or drop them in the source")
    _check_finite(x_valid, refs, fix="fill or drop them in the source")
    valid_rows: list[dict[str, Value]] = [
        dict(zip(refs, map(float, row), strict=True)) for row in x_valid
    ]
    return Prepared(
        x_train=x_train,
        x_valid=x_valid,
        y_train=y[train],
        y_valid=y[valid],
        valid_rows=valid_rows,
        columns=refs,
        classes=classes,
        feature_service=None,
        transform_state=None,
        digest=table.digest,
        rows=len(table.labels),
        lineage={"source": describe(source)},
    )


def _vectors(
    features: FeaturesService, call: Call[Any], state: str, rows: list[dict[str, Value]]
) -> np.ndarray:
    answer = call(lambda: features.transform_rows(TransformRows(state=state, rows=rows)))
    return np.asarray(answer.values.to_numpy(), dtype=np.float32)


def _columns(rows: list[dict[str, Value]], refs: list[str]) -> np.ndarray:
    out = np.empty((len(rows), len(refs)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, ref in enumerate(refs):
            value = row.get(ref)
            if isinstance(value, str | list):
                raise JobFailed(
                    f"row {i}: feature {ref!r} is not a number; use a feature service with"
                    " transforms (one_hot) for text and vectors"
                )
            out[i, j] = np.nan if value is None else float(value)
    return out


def _check_finite(
    x: np.ndarray,
    columns: list[str],
    *,
    fix: str = "give the features defaults or add fill_missing transforms",
) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        counts = bad.sum(axis=0)
        worst = [f"{columns[j]} ({int(counts[j])} rows)" for j in np.flatnonzero(counts)[:5]]
        raise JobFailed(
            "features hold missing or non-finite values: " + ", ".join(worst) + f"; {fix}"
        )


def _digest(rows: list[dict[str, Value]], labels: list[Value]) -> str:
    return "sha256:" + hashlib.sha256(msgspec.msgpack.encode([rows, labels])).hexdigest()
