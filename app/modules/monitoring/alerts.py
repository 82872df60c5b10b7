"""Alert rules: a signal of a model over a window, compared with a threshold, evaluated on a
schedule.

:meth:`Alerts.evaluate` is one round at an explicit time ``now`` (the schedule calls it with the
clock, tests with their own). Each rule moves between three states: ``ok``; ``pending`` once its
condition holds; ``firing`` once it has held for the rule's ``for_s`` (at once when ``for_s`` is
0). Firing publishes ``AlertFired``, and a firing rule whose condition no longer holds goes back
to ``ok`` and publishes ``AlertResolved``, each in the transaction that records the new state. A
window without data (``None``) never holds the condition.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from app.kernel.cursors import decode_cursor, encode_cursor
from app.modules.monitoring import alert_store
from contracts.common import InvalidInput, NotFound, Page, validate_name
from contracts.monitoring import (
    Alert,
    AlertFired,
    AlertResolved,
    DeleteAlert,
    GetAlert,
    ListAlerts,
    PutAlert,
)
from contracts.registry import GetModel, RegistryService

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events import Outbox
    from app.modules.monitoring.alert_targets import AlertTargets

__all__ = ["Alerts", "Measure"]

Measure = Callable[[Alert, float], Awaitable[float | None]]
"""The value of a rule's signal over its window ending at the given epoch time."""

MAX_LIST = 200


class Alerts:
    """The rules in the module's database, and their evaluation."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        registry: RegistryService,
        measure: Measure,
        targets: AlertTargets,
        logger: logging.Logger,
    ) -> None:
        self._targets = targets
        self._db = db
        self._outbox = outbox
        self._registry = registry
        self._measure = measure
        self._log = logger

    async def put(self, request: PutAlert, now: float) -> Alert:
        """Create or replace a rule (its model, deployment or view must be known, and the
        signal one that its target has)."""
        validate_name(request.name, what="alert name")
        await self._targets.check(request)
        if request.target == "model":
            try:
                await self._registry.get_model(GetModel(name=request.model))
            except NotFound:
                raise InvalidInput(
                    f"no model {request.model!r} is registered: an alert watches a registered"
                    " model",
                    details={"field": "model", "model": request.model},
                ) from None
        return await self._db.write(lambda c: alert_store.put_alert(c, request, now))

    async def get(self, request: GetAlert) -> Alert:
        """A rule; ``NotFound`` if there is none."""
        found = await self._db.read(lambda c: alert_store.get_alert(c, request.name))
        if found is None:
            raise NotFound(f"no alert {request.name!r}", details={"name": request.name})
        return found

    async def page(self, request: ListAlerts) -> Page[Alert]:
        """One page of rules by name."""
        if not 1 <= request.limit <= MAX_LIST:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST}")
        after = decode_cursor(request.cursor, "alert", str)[0] if request.cursor else None
        items, last = await self._db.read(
            lambda c: alert_store.page_alerts(c, request.limit, after)
        )
        return Page(items=items, next_cursor=None if last is None else encode_cursor("alert", last))

    async def delete(self, request: DeleteAlert) -> Alert:
        """Delete a rule; ``NotFound`` if there is none."""
        found = await self._db.write(lambda c: alert_store.delete_alert(c, request.name))
        if found is None:
            raise NotFound(f"no alert {request.name!r}", details={"name": request.name})
        return found

    async def evaluate(self, now: float) -> list[Alert]:
        """Evaluate every rule at ``now``; answers the rules as they now stand."""
        rules = await self._db.read(alert_store.all_alerts)
        done = []
        for rule in rules:
            try:
                value = await self._measure(rule, now)
            except Exception:
                self._log.warning("alert %s could not be evaluated", rule.name, exc_info=True)
                continue
            done.append(await self._step(rule, value, now))
        return done

    async def _step(self, rule: Alert, value: float | None, now: float) -> Alert:
        holds = value is not None and (
            value > rule.threshold if rule.comparison == "above" else value < rule.threshold
        )
        since = rule.since.timestamp() if rule.since is not None else now
        event: AlertFired | AlertResolved | None = None
        if not holds:
            state = "ok"
            if rule.state == "firing":
                event = AlertResolved(
                    name=rule.name,
                    model=rule.model,
                    version=rule.version,
                    signal=rule.signal,
                    threshold=rule.threshold,
                    value=value,
                    target=rule.target,
                    feature=rule.feature,
                )
        else:
            state = "pending" if rule.state == "ok" else rule.state
            if state == "pending" and rule.state == "ok":
                since = now
            if state == "pending" and now - since >= rule.for_s:
                state = "firing"
                assert value is not None
                event = AlertFired(
                    name=rule.name,
                    model=rule.model,
                    version=rule.version,
                    signal=rule.signal,
                    comparison=rule.comparison,
                    threshold=rule.threshold,
                    value=value,
                    window_s=rule.window_s,
                    target=rule.target,
                    feature=rule.feature,
                )
        if state != rule.state:
            since = now

        def record(conn: Any) -> None:
            kept = alert_store.set_state(conn, rule, state=state, value=value, since=since, now=now)
            if kept and event is not None:
                self._outbox.add(conn, event)

        await self._db.write(record)
        return msgspec.structs.replace(
            rule,
            state=state,
            value=value,
            since=datetime.fromtimestamp(since, tz=UTC),
            evaluated_at=datetime.fromtimestamp(now, tz=UTC),
        )
