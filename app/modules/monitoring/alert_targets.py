"""What an alert rule may watch besides a model's own figures, and how those are measured.

A rule's ``target`` says what its ``model`` field names. A **deployment** (one monitoring has
received predictions for: the records carry the deployment that served them) has the traffic
signals, computed over every prediction served through it whichever version answered. A
**feature view** has ``feature_freshness``: the age of its newest row's event, read through the
features contract's ``get_view`` (the features module must be hosted or configured). A model
also has ``expectation_violations``: the served input values breaking the expectations fitted
on their version's profile (:class:`.input_checks.InputChecks`), all columns or one
``feature``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.kernel.module import unbound
from app.modules.monitoring import figures, store
from contracts.common import InvalidInput, NotFound, validate_name
from contracts.features import FeaturesService, GetFeatureView
from contracts.monitoring import Alert, PutAlert

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.modules.monitoring.input_checks import InputChecks

__all__ = ["DEPLOYMENT_SIGNALS", "TRAFFIC_SIGNALS", "AlertTargets"]

TRAFFIC_SIGNALS = {
    "error_rate": "error_rate",
    "latency_p99_s": "latency_p99_s",
    "slo_compliance": "slo_compliance",
    "prediction_volume": "requests",
}
"""Alert signals read from the window's records, and their key in the latency figures."""
DEPLOYMENT_SIGNALS = frozenset(TRAFFIC_SIGNALS)
VIEW_SIGNALS = frozenset({"feature_freshness"})
MAX_FEATURE = 128
"""The longest input column name a rule may narrow to."""


class AlertTargets:
    """Checks a rule's target and signal, and measures what :meth:`handles`."""

    def __init__(
        self,
        *,
        db: Database,
        features: FeaturesService | None,
        inputs: InputChecks,
        slo_s: float,
    ) -> None:
        self._db = db
        self._features = features
        self._inputs = inputs
        self._slo_s = slo_s

    async def check(self, rule: PutAlert) -> None:
        """``InvalidInput`` for a signal the target does not have, an unknown deployment or
        view; a ``model`` target's model is checked by the caller."""
        validate_name(rule.model, what=f"{rule.target} name")
        if rule.feature is not None and rule.signal != "expectation_violations":
            raise _invalid("feature only narrows expectation_violations", "feature")
        if rule.feature is not None and not 0 < len(rule.feature) <= MAX_FEATURE:
            raise _invalid(f"feature must be 1 to {MAX_FEATURE} characters", "feature")
        allowed = {"deployment": DEPLOYMENT_SIGNALS, "view": VIEW_SIGNALS}.get(rule.target)
        if allowed is None:
            if rule.signal in VIEW_SIGNALS:
                raise _invalid(f"{rule.signal} watches a feature view: set target to view")
            return
        if rule.signal not in allowed:
            raise _invalid(
                f"a {rule.target} rule watches {', '.join(sorted(allowed))}, not {rule.signal}"
            )
        if rule.version is not None:
            raise _invalid(f"version narrows a model rule, not a {rule.target} rule", "version")
        if rule.target == "deployment":
            known = await self._db.read(lambda c: store.deployment_known(c, rule.model))
            if not known:
                raise _invalid(
                    f"no prediction served through deployment {rule.model!r} is known to"
                    " monitoring: an alert watches a deployment that serves traffic",
                    "model",
                )
            return
        try:
            await self._view_features().get_view(GetFeatureView(name=rule.model))
        except NotFound:
            raise _invalid(f"no feature view {rule.model!r}", "model") from None

    def _view_features(self) -> FeaturesService:
        if self._features is None:
            raise unbound("feature freshness alerts", "QUARRY_REMOTE_FEATURES")
        return self._features

    @staticmethod
    def handles(rule: Alert) -> bool:
        """Whether :meth:`measure` measures ``rule`` (else the model's own figures do)."""
        return rule.target != "model" or rule.signal == "expectation_violations"

    async def measure(self, rule: Alert, now: float) -> float | None:
        """``rule``'s signal over its window ending at ``now`` (``None``: no data)."""
        since = now - rule.window_s
        if rule.target == "view":
            view = await self._view_features().get_view(GetFeatureView(name=rule.model))
            newest = view.newest_event_at
            return None if newest is None else max(0.0, now - newest.timestamp())
        if rule.target == "deployment":
            rows = await self._db.read(
                lambda c: store.deployment_latencies(c, rule.model, since, now)
            )
            return traffic_signal(rule.signal, rows, self._slo_s)
        rows_checked, found = await self._inputs.count(rule.model, rule.version, since, now)
        if not rows_checked:
            return None
        return float(sum(f.count for f in found if rule.feature in (None, f.feature)))


def traffic_signal(signal: str, rows: list[tuple[float, float, str]], slo_s: float) -> float | None:
    """A traffic signal of ``(at, latency_s, status)`` records (``None``: no request)."""
    if signal == "prediction_volume":
        return float(len(rows))
    found = figures.latency_figures([r[1] for r in rows], [r[2] for r in rows], slo_s)
    value = found.get(TRAFFIC_SIGNALS[signal])
    return None if value is None or not found["requests"] else float(value)


def _invalid(message: str, field: str = "signal") -> InvalidInput:
    return InvalidInput(message, details={"field": field})
