"""Progressive rollouts: a deployment's traffic moves to a candidate step by step, judged on
monitoring's figures, and is rolled back, held or promoted with the reason recorded.

State lives in ``inference_rollouts``; every change writes the rollout, the deployment's routes
and a ``RolloutChanged`` event in one transaction. The stepper (:meth:`Rollouts.step_once`) checks
the running rollouts whose next check is due; a singleton loop runs it in one replica, and after
a restart it picks the running rollouts up from the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import msgspec
import sqlalchemy as sa

from app.kernel import singleton
from app.kernel.cursors import decode_cursor, encode_cursor
from app.kernel.module import unbound
from app.modules.inference import store
from app.modules.inference._rollout_judge import check_policy, judge
from contracts.common import Conflict, InvalidInput, ModelRef, NotFound, Page, validate_name
from contracts.inference import (
    Deployment,
    Rollout,
    RolloutChanged,
    RolloutStep,
    Route,
    StartRollout,
)
from contracts.monitoring import GetRealisedMetrics, GetSummary, RealisedMetrics, Summary
from contracts.registry import GetVersion, SetAlias

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from app.kernel.db import Database
    from app.kernel.events import Outbox
    from app.kernel.settings import Settings
    from app.modules.inference.deployments import Deployments
    from contracts.monitoring import MonitoringService
    from contracts.registry import RegistryService

__all__ = ["MAX_LIST", "TICK_S", "Rollouts"]

TICK_S = 0.5
"""How often the stepper looks for rollouts whose next check is due."""
MAX_LIST = 500
Action = Literal["start", "advance", "hold", "rollback", "promote", "abort"]
Status = Literal["running", "promoted", "rolled_back", "aborted"]


class Rollouts:
    """Starts, steps and finishes rollouts; see :class:`contracts.inference.RolloutPolicy`."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        registry: RegistryService,
        monitoring: MonitoringService | None,
        deployments: Deployments,
        settings: Settings,
        logger: logging.Logger,
        warm: Callable[[str], Awaitable[object]],
    ) -> None:
        self._db = db
        self._warm = warm
        self._outbox = outbox
        self._registry = registry
        self._monitoring = monitoring
        self._deployments = deployments
        self._settings = settings
        self._log = logger
        self._loop: asyncio.Task[None] | None = None

    # --- requests ---------------------------------------------------------------------------

    async def start(self, request: StartRollout) -> Rollout:
        if self._monitoring is None:
            raise unbound("progressive rollouts", "QUARRY_REMOTE_MONITORING")
        check_policy(request.policy)
        name = validate_name(request.deployment)
        running = await self._db.read(lambda conn: store.running_rollout(conn, name))
        if running is not None:
            raise _busy(name, running)
        candidate = await self._pin(request.candidate)
        current = await self._current(name)
        baseline = await self._baseline(request, current, candidate)
        follows = _follows(request, current, candidate)
        if baseline == candidate:
            raise InvalidInput(f"the candidate {candidate} is the baseline: nothing to roll out")
        for ref in (baseline, candidate):  # a cold load must not count as the version's latency
            await self._warm(ref)
        now = datetime.now(UTC)
        percent = request.policy.steps[0]
        reason = f"{percent:g} percent of {name} to {candidate}, the rest to {baseline}"
        rollout = Rollout(
            id=uuid.uuid4().hex,
            deployment=name,
            baseline=baseline,
            candidate=candidate,
            policy=request.policy,
            status="running",
            percent=percent,
            step=0,
            history=[RolloutStep(at=now, action="start", percent=percent, reason=reason)],
            created_at=now,
            updated_at=now,
            next_check_at=now + timedelta(seconds=request.policy.interval_s),
            follows=follows,
        )

        def insert(conn: Connection) -> bool:
            store.insert_rollout(conn, rollout, now.timestamp())
            self._outbox.add(conn, _event(rollout))
            return True

        deployment = current or Deployment(name=name, routes=[])
        routes = _routes(baseline, candidate, percent)
        try:
            await self._deployments.put_if(_with_routes(deployment, routes), insert)
        except sa.exc.IntegrityError:  # another rollout of it started meanwhile
            running = await self._db.read(lambda conn: store.running_rollout(conn, name))
            raise _busy(name, running) from None
        self._log.info("rollout %s of %s started: %s", rollout.id, name, reason)
        return rollout

    async def get(self, rollout_id: str) -> Rollout:
        return (await self._stored(rollout_id)).rollout

    async def page(self, deployment: str | None, limit: int, cursor: str | None) -> Page[Rollout]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(
                f"invalid limit {limit!r}: expected 1 to {MAX_LIST}",
                details={"field": "limit", "max": MAX_LIST},
            )
        after = decode_cursor(cursor, "rollout", float, str) if cursor else None
        items = await self._db.read(
            lambda conn: store.page_rollouts(conn, deployment=deployment, after=after, limit=limit)
        )
        more = len(items) > limit
        items = items[:limit]
        return Page(
            items=items,
            next_cursor=encode_cursor("rollout", items[-1].created_at.timestamp(), items[-1].id)
            if more
            else None,
        )

    async def promote(self, rollout_id: str, reason: str) -> Rollout:
        return await self._by_hand(rollout_id, "promote", reason)

    async def abort(self, rollout_id: str, reason: str) -> Rollout:
        return await self._by_hand(rollout_id, "abort", reason)

    async def _by_hand(self, rollout_id: str, action: Action, reason: str) -> Rollout:
        for _ in range(5):  # another replica's stepper may change it between read and write
            stored = await self._stored(rollout_id)
            if stored.rollout.status != "running":
                return stored.rollout
            now = datetime.now(UTC)
            done = await self._finish(stored, action, reason, {}, now)
            if done is not None:
                return done
        return await self.get(rollout_id)

    # --- the stepper ------------------------------------------------------------------------

    async def step_once(self, now: datetime | None = None) -> list[Rollout]:
        """Check every running rollout whose next check is due at ``now`` (default: the clock);
        answers the rollouts this round changed. Tests call it instead of waiting."""
        now = now or datetime.now(UTC)
        due = await self._db.read(lambda conn: store.due_rollouts(conn, now.timestamp()))
        changed = []
        for rollout_id in due:
            try:
                stored = await self._stored(rollout_id)
                moved = await self._check(stored, now)
            except Exception:  # one rollout's failure (monitoring down...) never stops the rest
                self._log.warning("rollout %s: check failed", rollout_id, exc_info=True)
                continue
            if moved is not None:
                changed.append(moved)
        return changed

    def start_loop(self) -> None:
        """Run :meth:`step_once` every :data:`TICK_S` in the replica leading the loop."""
        if self._monitoring is None:
            self._log.warning("rollouts are not stepped: monitoring is not bound")
            return
        lease = singleton.lease("inference.rollouts", db=self._db, settings=self._settings)
        loop = singleton.run_as_singleton(lease, self._round, interval_s=TICK_S, logger=self._log)
        self._loop = asyncio.create_task(loop, name="inference-rollouts")

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _round(self) -> None:
        await self.step_once()

    async def _check(self, stored: store.StoredRollout, now: datetime) -> Rollout | None:
        rollout = stored.rollout
        window = max(1.0, now.timestamp() - stored.step_started_at)
        candidate, baseline = await asyncio.gather(
            self._summary(rollout.candidate, window), self._summary(rollout.baseline, window)
        )
        verdict = judge(rollout.policy, candidate, baseline, await self._quality(rollout, window))
        if verdict.action == "hold":
            return await self._move(stored, "hold", verdict.reason, verdict.figures, now)
        if verdict.action == "rollback":
            return await self._finish(stored, "rollback", verdict.reason, verdict.figures, now)
        steps = rollout.policy.steps
        if rollout.step + 1 >= len(steps):
            reason = f"{verdict.reason}; promoted"
            return await self._finish(stored, "promote", reason, verdict.figures, now)
        reason = f"{verdict.reason}; {steps[rollout.step + 1]:g} percent to the candidate"
        return await self._move(stored, "advance", reason, verdict.figures, now)

    # --- changes ----------------------------------------------------------------------------

    async def _move(
        self,
        stored: store.StoredRollout,
        action: Action,
        reason: str,
        figures: dict[str, float],
        now: datetime,
    ) -> Rollout | None:
        """Hold at the current step, or advance to the next one."""
        rollout = stored.rollout
        step = rollout.step + (action == "advance")
        percent = rollout.policy.steps[step]
        entry = RolloutStep(at=now, action=action, percent=percent, reason=reason, figures=figures)
        history = list(rollout.history)
        if action == "hold" and history and history[-1].action == "hold":
            history[-1] = entry  # keep the latest figures, not one line per interval
        else:
            history.append(entry)
        changed = msgspec.structs.replace(
            rollout,
            step=step,
            percent=percent,
            history=history,
            updated_at=now,
            next_check_at=now + timedelta(seconds=rollout.policy.interval_s),
        )
        started = now.timestamp() if action == "advance" else stored.step_started_at
        routes = _routes(rollout.baseline, rollout.candidate, percent)
        return await self._write(stored, changed, started, routes if action == "advance" else None)

    async def _finish(
        self,
        stored: store.StoredRollout,
        action: Action,
        reason: str,
        figures: dict[str, float],
        now: datetime,
    ) -> Rollout | None:
        """Promote (all traffic to the candidate, alias moved) or roll back / abort."""
        rollout = stored.rollout
        promoted = action == "promote"
        status: Status = (
            "promoted" if promoted else "rolled_back" if action == "rollback" else "aborted"
        )
        percent = 100.0 if promoted else 0.0
        if promoted and rollout.policy.promote_alias:
            # Before the state changes: a failure leaves the rollout running, to be tried again.
            ref = ModelRef.parse(rollout.candidate)
            assert ref.version is not None
            alias = SetAlias(name=ref.name, alias=rollout.policy.promote_alias, version=ref.version)
            await self._registry.set_alias(alias)
            await self._deployments.alias_moved(ref.name)  # this process follows it at once
        entry = RolloutStep(at=now, action=action, percent=percent, reason=reason, figures=figures)
        changed = msgspec.structs.replace(
            rollout,
            status=status,
            percent=percent,
            history=[*rollout.history, entry],
            updated_at=now,
            next_check_at=None,
        )
        routes = [Route(model=_final_route(rollout, promoted), weight=100.0)]
        done = await self._write(stored, changed, stored.step_started_at, routes)
        if done is not None:
            self._log.info("rollout %s: %s (%s)", rollout.id, status, reason)
        return done

    async def _write(
        self,
        stored: store.StoredRollout,
        changed: Rollout,
        started: float,
        routes: list[Route] | None,
    ) -> Rollout | None:
        """Store the change (and the routes) with its event; ``None`` if the rollout changed
        since it was read."""

        def update(conn: Connection) -> bool:
            ok = store.update_rollout(
                conn, changed, revision=stored.revision, step_started_at=started
            )
            if ok:
                self._outbox.add(conn, _event(changed))
            return ok

        if routes is None:
            return changed if await self._db.write(update) else None
        current = await self._current(changed.deployment)
        if current is None:  # deleted by hand: nothing left to route
            gone = f"deployment {changed.deployment!r} no longer exists"
            changed = _ended(changed, "aborted", "abort", gone)
            return changed if await self._db.write(update) else None
        done = await self._deployments.put_if(_with_routes(current, routes), update)
        return changed if done else None

    # --- reading ----------------------------------------------------------------------------

    async def _stored(self, rollout_id: str) -> store.StoredRollout:
        found = await self._db.read(lambda conn: store.get_rollout(conn, rollout_id))
        if found is None:
            raise NotFound(f"no rollout {rollout_id!r}", details={"id": rollout_id})
        return found

    async def _current(self, name: str) -> Deployment | None:
        try:
            return await self._deployments.get(name)
        except NotFound:
            return None

    async def _pin(self, ref: str) -> str:
        info = await self._registry.get_version(GetVersion(ref=ref))
        return f"{info.name}:{info.version}"

    async def _baseline(
        self, request: StartRollout, current: Deployment | None, candidate: str
    ) -> str:
        if request.baseline is not None:
            return await self._pin(request.baseline)
        if current is not None:
            if len(current.routes) != 1:
                raise InvalidInput(
                    f"deployment {current.name!r} has {len(current.routes)} routes:"
                    " name the baseline",
                    details={"field": "baseline"},
                )
            return await self._pin(current.routes[0].model)
        champion = f"{ModelRef.parse(candidate).name}@champion"
        try:
            return await self._pin(champion)
        except NotFound:
            raise InvalidInput(
                f"no deployment {request.deployment!r} and no {champion}: name the baseline",
                details={"field": "baseline"},
            ) from None

    async def _summary(self, ref: str, window_s: float) -> Summary:
        assert self._monitoring is not None
        parsed = ModelRef.parse(ref)
        return await self._monitoring.get_summary(
            GetSummary(model=parsed.name, version=parsed.version, window_s=window_s)
        )

    async def _quality(
        self, rollout: Rollout, window_s: float
    ) -> tuple[RealisedMetrics, RealisedMetrics] | None:
        assert self._monitoring is not None
        answers = []
        for ref in (rollout.candidate, rollout.baseline):
            parsed = ModelRef.parse(ref)
            asked = GetRealisedMetrics(model=parsed.name, version=parsed.version, window_s=window_s)
            try:
                answers.append(await self._monitoring.get_realised_metrics(asked))
            except (NotFound, InvalidInput):  # no feedback to judge by
                return None
        return answers[0], answers[1]


def _follows(request: StartRollout, current: Deployment | None, candidate: str) -> str | None:
    """The alias the deployment follows as the rollout starts: the baseline named as
    ``name@alias``, else the deployment's one route naming an alias, else (no deployment) the
    champion the baseline is taken from; ``None`` when it is pinned to a version."""
    if request.baseline is not None:
        named = request.baseline
    elif current is not None:
        named = current.routes[0].model  # one route: _baseline refuses more
    else:
        named = f"{ModelRef.parse(candidate).name}@champion"
    return named if ModelRef.parse(named).alias is not None else None


def _final_route(rollout: Rollout, promoted: bool) -> str:
    """Where a finished rollout leaves all the traffic: a deployment started from an alias
    follows one again (the promoted alias, else the one it followed); a pinned one stays
    pinned (to the candidate when promoted, else to the baseline)."""
    if promoted:
        alias = rollout.policy.promote_alias
        if rollout.follows is not None and alias:
            return f"{ModelRef.parse(rollout.candidate).name}@{alias}"
        return rollout.candidate
    return rollout.follows or rollout.baseline


def _routes(baseline: str, candidate: str, percent: float) -> list[Route]:
    if percent >= 100:
        return [Route(model=candidate, weight=100.0)]
    if percent <= 0:
        return [Route(model=baseline, weight=100.0)]
    return [Route(model=baseline, weight=100.0 - percent), Route(model=candidate, weight=percent)]


def _with_routes(deployment: Deployment, routes: list[Route]) -> Deployment:
    return msgspec.structs.replace(deployment, routes=routes, updated_at=None)


def _ended(rollout: Rollout, status: Status, action: Action, reason: str) -> Rollout:
    last = rollout.history[-1]
    entry = RolloutStep(at=last.at, action=action, percent=rollout.percent, reason=reason)
    return msgspec.structs.replace(
        rollout, status=status, history=[*rollout.history[:-1], entry], next_check_at=None
    )


def _event(rollout: Rollout) -> RolloutChanged:
    last = rollout.history[-1]
    return RolloutChanged(
        id=rollout.id,
        deployment=rollout.deployment,
        candidate=rollout.candidate,
        baseline=rollout.baseline,
        status=rollout.status,
        action=last.action,
        percent=rollout.percent,
        reason=last.reason,
    )


def _busy(name: str, running: str | None) -> Conflict:
    return Conflict(
        f"deployment {name!r} already has a running rollout {running}: promote or abort it first",
        details={"deployment": name, "rollout": running},
    )
