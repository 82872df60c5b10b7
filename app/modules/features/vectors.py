"""Model inputs from feature values: one code path for training (offline) and serving (online).

Raw values become a float32 matrix in three steps, the same both ways: overrides replace fetched
values, missing values take the feature's default (serving refuses a missing value of a feature
that says ``on_missing="error"``; training leaves it missing for ``fill_missing``), then the
transforms run with a fitted :class:`~contracts.features.TransformState`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.modules.features import transforms
from app.modules.features.reads import Resolved
from app.modules.features.rows import check_value, entity_columns
from contracts.common import InvalidInput, Tensor, UnprocessableInput
from contracts.features import (
    Feature,
    FeatureDType,
    FeatureService,
    FeatureVectors,
    GetFeatureService,
    PutFeatureService,
    TransformState,
    Value,
)

__all__ = ["FeatureSource", "Fitted", "Vectorizer", "check_service"]


def _dtypes(resolved: Resolved) -> dict[str, FeatureDType]:
    return {str(ref): _spec(resolved, str(ref)).dtype for ref in resolved.refs}


def _spec(resolved: Resolved, ref: str) -> Feature:
    view, _, name = ref.partition(":")
    return next(f for f in resolved.views[view].features if f.name == name)


def check_service(request: PutFeatureService, resolved: Resolved) -> None:
    """Reject transforms that do not fit the service's features (names the transform)."""
    transforms.plan(request.features, request.transforms, _dtypes(resolved))


@dataclass(frozen=True, slots=True)
class Fitted:
    """What fitting answers: a parameter dict per transform and the model input columns."""

    params: list[dict[str, Value]]
    columns: list[str]


class FeatureSource(Protocol):
    """What a :class:`Vectorizer` reads: feature definitions, services and online values.

    The features service provides it; the Vectorizer needs nothing else of it, and so does not
    import it (the service imports the Vectorizer).
    """

    async def resolve(self, features: Sequence[str]) -> Resolved:
        """Feature references with their latest views; unknown ones are ``NotFound``."""
        ...

    async def get_service(self, request: GetFeatureService) -> FeatureService:
        """A feature service's definition (a given version, else the latest)."""
        ...

    async def read_online_columns(
        self, resolved: Resolved, entities: dict[str, Sequence[Value]], rows: int
    ) -> list[list[Value]]:
        """Raw online values per reference (``None`` when missing, null or too old)."""
        ...


class Vectorizer:
    """Turns raw feature values into model inputs for a feature service."""

    def __init__(self, service: FeatureSource) -> None:
        self._service = service

    async def fit(self, spec: FeatureService, rows: Sequence[Mapping[str, Value]]) -> Fitted:
        """Fit the service's transforms on historical rows (keys ``view:feature``)."""
        if not rows:
            raise InvalidInput("cannot fit transforms on zero rows")
        resolved = await self._service.resolve(spec.features)
        columns = _fill(resolved, _columns(spec.features, rows), strict=False)
        params, names = transforms.fit(spec.features, spec.transforms, _dtypes(resolved), columns)
        return Fitted(params=params, columns=names)

    async def offline(
        self, state: TransformState, rows: Sequence[Mapping[str, Value]]
    ) -> FeatureVectors:
        """Model inputs for raw rows (the training and evaluation path)."""
        spec, resolved = await self._load(state)
        columns = _fill(resolved, _columns(spec.features, rows), strict=False)
        return self._apply(spec, resolved, state, columns)

    async def online(
        self,
        spec: FeatureService,
        state: TransformState,
        entities: Mapping[str, Sequence[Value]],
        overrides: Mapping[str, Sequence[Value]],
    ) -> FeatureVectors:
        """Model inputs for entities from the online store, with per-row overrides."""
        if (spec.name, spec.version) != (state.service, state.service_version):
            raise InvalidInput(
                f"transform state {state.id!r} belongs to {state.service}:{state.service_version},"
                f" not {spec.name}:{spec.version}"
            )
        resolved = await self._service.resolve(spec.features)
        rows = entity_columns(entities)
        values = await self._service.read_online_columns(resolved, dict(entities), rows)
        columns = dict(zip(spec.features, values, strict=True))
        _override(resolved, columns, overrides, rows)
        return self._apply(spec, resolved, state, _fill(resolved, columns, strict=True))

    async def _load(self, state: TransformState) -> tuple[FeatureService, Resolved]:
        spec = await self._service.get_service(
            GetFeatureService(name=state.service, version=state.service_version)
        )
        return spec, await self._service.resolve(spec.features)

    @staticmethod
    def _apply(
        spec: FeatureService,
        resolved: Resolved,
        state: TransformState,
        columns: dict[str, list[Value]],
    ) -> FeatureVectors:
        matrix = transforms.apply(
            spec.features, spec.transforms, _dtypes(resolved), state.params, state.columns, columns
        )
        return FeatureVectors(
            columns=state.columns,
            values=Tensor.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)),
            state=state.id,
        )


def _columns(
    features: Sequence[str], rows: Sequence[Mapping[str, Value]]
) -> dict[str, list[Value]]:
    return {ref: [row.get(ref) for row in rows] for ref in features}


def _override(
    resolved: Resolved,
    columns: dict[str, list[Value]],
    overrides: Mapping[str, Sequence[Value]],
    rows: int,
) -> None:
    for ref, values in overrides.items():
        if ref not in columns:
            raise InvalidInput(
                f"override {ref!r} is not a feature of this service"
                f" (features: {', '.join(columns)})",
                details={"feature": ref},
            )
        if len(values) != rows:
            raise InvalidInput(
                f"override {ref!r} has {len(values)} values for {rows} entity rows",
                details={"feature": ref},
            )
        spec = _spec(resolved, ref)
        column = columns[ref]
        for index, value in enumerate(values):
            if value is not None:
                try:
                    column[index] = check_value(spec, value)
                except InvalidInput as exc:
                    raise UnprocessableInput(
                        f"override {ref!r}, row {index}: {exc}",
                        details={"feature": ref, "row": index},
                    ) from None


def _fill(
    resolved: Resolved, columns: dict[str, list[Value]], *, strict: bool
) -> dict[str, list[Value]]:
    for ref, column in columns.items():
        spec = _spec(resolved, ref)
        for index, value in enumerate(column):
            if value is not None:
                continue
            if spec.default is not None:
                column[index] = spec.default
            elif strict and spec.on_missing == "error":
                raise UnprocessableInput(
                    f"entity row {index}: feature {ref!r} has no value (not found, null or older"
                    " than the view's TTL) and its view requires one (on_missing='error');"
                    " push it or pass it as an override",
                    details={"feature": ref, "row": index},
                )
    return columns
