"""Data expectations of a view: their table, the checks of a spec, and the checks of a push.

A view's expectations (:class:`~contracts.features.Expectation`, one per feature at most) are
kept by view name, apart from its versions: a new version keeps them, and an expectation whose
feature a later version dropped is skipped. A push is checked after its rows passed the type
checks of :mod:`.rows`; every broken expectation becomes a :class:`Violation` naming the row
and the feature, which the service turns into a rejection or a warning as the view says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.modules.features.store import metadata
from contracts.common import InvalidInput
from contracts.features import (
    Expectation,
    FeatureExpectations,
    FeatureView,
    PutExpectations,
    Value,
)

__all__ = [
    "MAX_WARNINGS",
    "Violation",
    "add_violations",
    "check_spec",
    "get_expectations",
    "put_expectations",
    "violations",
]

MAX_WARNINGS = 20
"""The most violations a push describes in its answer (all are counted)."""
MAX_CATEGORIES = 10_000
"""The most allowed categories one expectation may list."""

expectations = sa.Table(
    "features_expectations",
    metadata,
    sa.Column("view", sa.String(128), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("violations", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

_COMPATIBLE = {("int", "float"), ("float", "int")}
"""``(expected, declared)`` dtypes that may differ: integral floats, or ints read as numbers."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken expectation: ``row`` is the push's row index (``None`` for a batch-wide one,
    the null share), ``kind`` one of ``range``, ``category``, ``type``, ``null_share``."""

    row: int | None
    feature: str
    kind: str
    message: str

    def __str__(self) -> str:
        where = "rows" if self.row is None else f"row {self.row}"
        return f"{where}, {self.feature!r}: {self.message}"


# --- a spec ---------------------------------------------------------------------------------


def check_spec(view: FeatureView, request: PutExpectations) -> None:
    """``InvalidInput`` naming the expectation at fault: an unknown or repeated feature, a dtype
    the feature cannot have, ``min`` above ``max``, bounds on a non-numeric feature, too many
    categories."""
    features = {f.name: f for f in view.features}
    seen: set[str] = set()
    for index, rule in enumerate(request.expectations):
        where = f"expectations[{index}] ({rule.feature!r})"
        details = {"field": f"expectations[{index}]", "feature": rule.feature}
        feature = features.get(rule.feature)
        if feature is None:
            raise InvalidInput(
                f"{where}: view {view.name!r} has no feature {rule.feature!r}"
                f" (features: {', '.join(features)})",
                details=details,
            )
        if rule.feature in seen:
            raise InvalidInput(f"{where}: the feature has an expectation already", details=details)
        seen.add(rule.feature)
        declared = feature.dtype
        if rule.dtype not in (None, declared) and (rule.dtype, declared) not in _COMPATIBLE:
            raise InvalidInput(
                f"{where}: expects {rule.dtype} but the feature is {declared}", details=details
            )
        numeric = declared in ("int", "float", "float_vector")
        if (rule.min is not None or rule.max is not None) and not numeric:
            raise InvalidInput(
                f"{where}: min and max bound numbers, not {declared}", details=details
            )
        if rule.min is not None and rule.max is not None and rule.min > rule.max:
            raise InvalidInput(f"{where}: min {rule.min} is above max {rule.max}", details=details)
        if rule.categories is not None and len(rule.categories) > MAX_CATEGORIES:
            raise InvalidInput(
                f"{where}: at most {MAX_CATEGORIES} categories are allowed", details=details
            )


# --- a push ---------------------------------------------------------------------------------


def violations(
    view: FeatureView,
    rules: Sequence[Expectation],
    rows: Sequence[tuple[str, int, dict[str, Value]]],
) -> list[Violation]:
    """Every expectation ``rows`` (checked by :func:`.rows.pushed_rows`) break, by row."""
    dtypes = {f.name: f.dtype for f in view.features}
    found: list[Violation] = []
    for rule in rules:
        if rule.feature not in dtypes:
            continue  # a later version of the view dropped the feature
        allowed = None if rule.categories is None else frozenset(rule.categories)
        nulls = 0
        for index, (_, _, values) in enumerate(rows):
            value = values.get(rule.feature)
            if value is None:
                nulls += 1
                continue
            problem = _broken(rule, allowed, value)
            if problem is not None:
                found.append(Violation(index, rule.feature, *problem))
        share = nulls / len(rows) if rows else 0.0
        if rule.max_null_share is not None and share > rule.max_null_share:
            found.append(
                Violation(
                    None,
                    rule.feature,
                    "null_share",
                    f"missing in {nulls} of {len(rows)} rows ({share:.1%}); at most"
                    f" {rule.max_null_share:.1%} expected",
                )
            )
    found.sort(key=lambda v: (-1 if v.row is None else v.row, v.feature))
    return found


def _broken(
    rule: Expectation, allowed: frozenset[str] | None, value: Value
) -> tuple[str, str] | None:
    """``(kind, message)`` when ``value`` breaks ``rule``, else ``None``."""
    numbers = value if isinstance(value, list) else [value]
    if rule.dtype == "int" and any(
        isinstance(v, float) and not float(v).is_integer() for v in numbers
    ):
        return "type", f"{value!r} is not an integer"
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, int | float):
            break
        if rule.min is not None and number < rule.min:
            return "range", f"{number!r} is below the expected minimum {rule.min}"
        if rule.max is not None and number > rule.max:
            return "range", f"{number!r} is above the expected maximum {rule.max}"
    if allowed is not None and not isinstance(value, list) and _text(value) not in allowed:
        shown = ", ".join(sorted(allowed)[:10]) + (", ..." if len(allowed) > 10 else "")
        return "category", f"{_text(value)!r} is not an allowed category ({shown})"
    return None


def _text(value: Value) -> str:
    """A value as its category text: ``"3"`` for 3 and 3.0, ``"true"`` for True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


# --- the table ------------------------------------------------------------------------------


def _answer(view: str, row: Any | None) -> FeatureExpectations:
    if row is None:
        return FeatureExpectations(view=view)
    spec = msgspec.convert(row.spec, PutExpectations)
    return FeatureExpectations(
        view=view,
        expectations=spec.expectations,
        on_violation=spec.on_violation,
        fitted_from=spec.fitted_from,
        violations=row.violations,
        updated_at=_utc(row.updated_at),
    )


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive times: they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def get_expectations(conn: Connection, view: str) -> FeatureExpectations:
    """A view's expectations (none set: an empty answer)."""
    row = conn.execute(sa.select(expectations).where(expectations.c.view == view)).first()
    return _answer(view, row)


def put_expectations(conn: Connection, request: PutExpectations) -> FeatureExpectations:
    """Replace a view's expectations (their violation count starts again); none: remove them."""
    conn.execute(expectations.delete().where(expectations.c.view == request.view))
    if request.expectations:
        conn.execute(
            expectations.insert().values(
                view=request.view,
                spec=msgspec.to_builtins(request),
                violations=0,
                updated_at=datetime.now(UTC),
            )
        )
    return get_expectations(conn, request.view)


def add_violations(conn: Connection, view: str, count: int) -> None:
    """Count violations a warned push let through."""
    if count:
        conn.execute(
            expectations.update()
            .where(expectations.c.view == view)
            .values(violations=expectations.c.violations + count)
        )
