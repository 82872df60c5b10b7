"""Served inputs against the expectations fitted on their version's reference profile.

The expectations of a version are fitted once (:func:`.expectations.fit` with its default
tolerances) and kept in memory; a version without a reference profile has none and its inputs
are skipped. Only the sampled inputs kept with prediction records are checked, as drift does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from app.modules.monitoring import expectations, store
from app.modules.monitoring.profiles import reference_profile
from contracts.common import InvalidInput, NotFound, validate_name
from contracts.features import Expectation
from contracts.monitoring import (
    ExpectationViolations,
    FeatureViolations,
    FitExpectations,
    FittedExpectations,
    GetExpectationViolations,
)
from contracts.registry import ReferenceProfile, RegistryService

if TYPE_CHECKING:
    from app.kernel.db import Database

__all__ = ["InputChecks"]

CACHED_VERSIONS = 256
"""Versions whose fitted expectations are kept (all are dropped when it fills)."""

_Fitted = tuple[list[str], list[Expectation]] | None


class InputChecks:
    """Fits expectations on reference profiles and counts the served inputs breaking them."""

    def __init__(self, *, db: Database, registry: RegistryService) -> None:
        self._db = db
        self._registry = registry
        self._fitted: dict[tuple[str, int], _Fitted] = {}

    async def _profile(self, ref: str) -> tuple[str, int, ReferenceProfile]:
        return await reference_profile(
            self._registry,
            ref,
            needed_for="expectations are fitted on the training data profile registered with"
            " the version",
        )

    async def fit(self, request: FitExpectations) -> FittedExpectations:
        """Expectations fitted on the profile of the version ``request.model`` resolves to."""
        if request.view is not None:
            validate_name(request.view, what="feature view name")
        name, version, profile = await self._profile(request.model)
        found = expectations.fit(
            profile, tolerance=request.tolerance, null_tolerance=request.null_tolerance
        )
        if request.view is not None:
            found = expectations.for_view(found, request.view)
        return FittedExpectations(
            model=name, version=version, fitted_from=f"{name}:{version}", expectations=found
        )

    async def _of(self, model: str, version: int) -> _Fitted:
        key = (model, version)
        if key not in self._fitted:
            if len(self._fitted) >= CACHED_VERSIONS:
                self._fitted.clear()
            try:
                _, _, profile = await self._profile(f"{model}:{version}")
                self._fitted[key] = (profile.columns, expectations.fit(profile))
            except NotFound:
                self._fitted[key] = None
        return self._fitted[key]

    async def count(
        self, model: str, version: int | None, since: float, until: float
    ) -> tuple[int, list[FeatureViolations]]:
        """Rows checked, and the columns with violations (most first), over a window."""
        done = await self._db.read(
            lambda c: store.logged(c, model, version, since, until, with_inputs=True)
        )
        by_version: dict[int, list[np.ndarray]] = defaultdict(list)
        for item in done:
            if item.version is not None and item.inputs:
                by_version[item.version].append(
                    np.asarray(next(iter(item.inputs.values())).to_numpy(), dtype=np.float64)
                )
        rows = 0
        found: list[FeatureViolations] = []
        for number, arrays in sorted(by_version.items()):
            fitted = await self._of(model, number)
            if fitted is None:
                continue
            columns, rules = fitted
            matrix = [a for a in arrays if a.ndim == 2 and a.shape[1] == len(columns)]
            if not matrix:
                continue
            inputs = np.concatenate(matrix)
            rows += len(inputs)
            found.extend(expectations.count_violations(number, columns, rules, inputs))
        found.sort(key=lambda f: (-f.count, f.version, f.feature))
        return rows, found

    async def violations(
        self, request: GetExpectationViolations, until: float
    ) -> ExpectationViolations:
        """The answer of ``get_expectation_violations`` for a window ending at ``until``."""
        validate_name(request.model, what="model name")
        if request.window_s <= 0:
            raise InvalidInput("window must be more than 0 seconds")
        rows, found = await self.count(
            request.model, request.version, until - request.window_s, until
        )
        return ExpectationViolations(
            model=request.model,
            version=request.version,
            window_s=request.window_s,
            rows=rows,
            total=sum(f.count for f in found),
            features=found,
        )
