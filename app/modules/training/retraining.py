"""Retraining sagas: drift (or a schedule, or a person) -> train -> gate -> rollout.

A retraining is a row keyed by its trigger (``drift:<report id>``, ``schedule:<slot>``,
``manual:<id>``): an event delivered three times finds the row the first delivery made and
starts nothing more. Each step is taken by :meth:`Retrainings.advance`, which the training
module's loop calls; it reads the state of the step in flight (the job, then the rollout) and
moves on, or compensates: a version whose rollout cannot start or is rolled back loses the alias
its job's gate gave it (``candidate``), so nothing points at a version that did not make it.
The saga's log says which quality the rollout judged the candidate on: realised from feedback,
or, where none arrived and the policy's rollout has ``judge_estimated``, estimated without labels.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.kernel.cursors import decode_cursor, encode_cursor
from app.kernel.db import Database
from app.kernel.events import EventMeta
from app.modules.training import store
from app.modules.training.store import policies, retrainings
from contracts.common import NotFound, QuarryError, validate_name
from contracts.features import EVENT_TIMESTAMP
from contracts.inference import GetRollout, InferenceService, Rollout, StartRollout
from contracts.monitoring import DriftDetected
from contracts.registry import DeleteAlias, RegistryService
from contracts.training import (
    Retraining,
    RetrainingPolicy,
    TrainingJob,
    TrainingJobSpec,
)

__all__ = ["CANDIDATE", "Retrainings", "quality_judged"]

CANDIDATE = "candidate"
"""The alias a retrained version that passed its gate gets until its rollout decides."""

Submit = Callable[[TrainingJobSpec], Awaitable[TrainingJob]]
GetJob = Callable[[str], Awaitable[TrainingJob]]


def _saga(row: Any) -> Retraining:
    return Retraining(
        id=row.id,
        model=row.model,
        trigger=row.trigger,
        status=row.status,
        job_id=row.job_id,
        version=row.version,
        rollout_id=row.rollout_id,
        error=row.error,
        log=list(row.log or []),
        created_at=datetime.fromtimestamp(row.created_at, tz=UTC),
        updated_at=datetime.fromtimestamp(row.updated_at, tz=UTC),
    )


class Retrainings:
    """Policies and sagas of one training module."""

    def __init__(
        self,
        *,
        db: Database,
        registry: RegistryService,
        inference: InferenceService | None,
        submit: Submit,
        get_job: GetJob,
        logger: logging.Logger,
    ) -> None:
        self._db = db
        self._registry = registry
        self._inference = inference
        self._submit = submit
        self._get_job = get_job
        self._log = logger

    # --- policies ---------------------------------------------------------------------------

    async def put_policy(self, policy: RetrainingPolicy) -> RetrainingPolicy:
        validate_name(policy.model, what="model name")
        if policy.deployment is not None:
            validate_name(policy.deployment, what="deployment name")
        now = time.time()

        def put(conn: Connection) -> None:
            conn.execute(policies.delete().where(policies.c.model == policy.model))
            conn.execute(
                policies.insert().values(
                    model=policy.model,
                    spec=msgspec.to_builtins(policy),
                    last_scheduled_at=now,
                    updated_at=now,
                )
            )

        await self._db.write(put)
        return policy

    async def get_policy(self, model: str) -> RetrainingPolicy:
        row = await self._db.read(
            lambda c: c.execute(sa.select(policies.c.spec).where(policies.c.model == model)).first()
        )
        if row is None:
            raise NotFound(f"model {model!r} has no retraining policy", details={"model": model})
        return msgspec.convert(row.spec, RetrainingPolicy)

    async def _policy_or_default(self, model: str) -> RetrainingPolicy:
        try:
            return await self.get_policy(model)
        except NotFound:
            return RetrainingPolicy(model=model)

    # --- triggers ---------------------------------------------------------------------------

    async def on_drift(self, event: DriftDetected, _meta: EventMeta) -> None:
        """``DriftDetected``: retrain when the model's policy asks for it (once per report)."""
        try:
            policy = await self.get_policy(event.model)
        except NotFound:
            return
        if policy.enabled and policy.on_drift:
            drifted = ", ".join(event.features) or "the predictions"
            await self.start(
                event.model,
                f"drift:{event.report_id}",
                f"drift in {drifted} (report {event.report_id})",
            )

    async def schedule_round(self) -> None:
        """Start the retrainings whose schedule is due; one model's failure is logged and the
        others are scheduled all the same."""
        now = time.time()
        rows = await self._db.read(lambda c: c.execute(sa.select(policies)).all())
        for row in rows:
            try:
                await self._schedule(row, now)
            except Exception:
                self._log.warning("retraining schedule of %s failed", row.model, exc_info=True)

    async def _schedule(self, row: Any, now: float) -> None:
        policy = msgspec.convert(row.spec, RetrainingPolicy)
        due = (row.last_scheduled_at or 0) + policy.interval_s
        if not (policy.enabled and policy.interval_s > 0 and due <= now):
            return
        slot = int(now // policy.interval_s)
        await self._db.write(
            lambda c: c.execute(
                policies.update().where(policies.c.model == row.model).values(last_scheduled_at=now)
            )
        )
        await self.start(policy.model, f"schedule:{slot}", "on schedule")

    async def start(self, model: str, trigger: str, reason: str) -> Retraining:
        """Start a retraining for ``trigger`` — or answer the one it already started."""
        existing = await self._by_trigger(trigger)
        if existing is not None:
            return existing
        spec = await self._spec_for(model)
        saga_id = uuid.uuid4().hex
        now = time.time()

        def insert(conn: Connection) -> bool:
            if conn.execute(
                sa.select(retrainings.c.id).where(retrainings.c.trigger == trigger)
            ).first():
                return False
            conn.execute(
                retrainings.insert().values(
                    id=saga_id,
                    model=model,
                    trigger=trigger,
                    status="training",
                    log=[f"started: {reason}"],
                    created_at=now,
                    updated_at=now,
                )
            )
            return True

        try:
            fresh = await self._db.write(insert)
        except sa.exc.IntegrityError:  # another replica inserted the same trigger just now
            fresh = False
        if not fresh:
            found = await self._by_trigger(trigger)
            assert found is not None
            return found
        job = await self._submit(spec)
        await self._update(saga_id, job_id=job.id, note=f"submitted training job {job.id}")
        return await self.get(saga_id)

    async def _spec_for(self, model: str) -> TrainingJobSpec:
        """The policy's ``job`` when it names one, else the model's last successful job's."""
        try:
            policy = await self.get_policy(model)
        except NotFound:
            return await self._last_spec(model)
        if policy.job is not None:
            return _refreshed(policy.job)
        return await self._last_spec(model)

    async def _last_spec(self, model: str) -> TrainingJobSpec:
        def last(conn: Connection) -> Any:
            return conn.execute(
                sa.select(store.jobs.c.spec)
                .where(store.jobs.c.model == model, store.jobs.c.status == "succeeded")
                .order_by(store.jobs.c.created_at.desc())
                .limit(1)
            ).first()

        row = await self._db.read(last)
        if row is None:
            raise NotFound(
                f"model {model!r} was never trained by a job here: no spec to retrain from"
                " (a retraining policy's `job` names the trainer and dataset to use)",
                details={"model": model},
            )
        return _refreshed(store.read_spec(row.spec))

    # --- steps ------------------------------------------------------------------------------

    async def advance_all(self) -> None:
        """Take the next step of every saga in flight."""
        ids = await self._db.read(
            lambda c: list(
                c.execute(
                    sa.select(retrainings.c.id).where(
                        retrainings.c.status.in_(("training", "rolling_out"))
                    )
                ).scalars()
            )
        )
        for saga_id in ids:
            try:
                await self.advance(saga_id)
            except QuarryError as exc:  # a dependency is down: the next round tries again
                self._log.warning("retraining %s could not advance: %s", saga_id, exc.message)
            except Exception as exc:  # it never will: fail it, and the others go on
                self._log.error("retraining %s failed", saga_id, exc_info=True)
                await self._update(saga_id, status="failed", error=str(exc))

    async def advance(self, saga_id: str) -> Retraining:
        """Take the next step of one saga (a finished one is left alone)."""
        saga = await self.get(saga_id)
        if saga.status == "training" and saga.job_id is not None:
            await self._after_training(saga, await self._get_job(saga.job_id))
        elif saga.status == "rolling_out" and saga.rollout_id is not None:
            await self._after_rollout(saga)
        return await self.get(saga_id)

    async def _after_training(self, saga: Retraining, job: TrainingJob) -> None:
        if job.status in ("queued", "running"):
            return
        if job.status != "succeeded" or job.version is None:
            await self._update(
                saga.id, status="failed", error=f"training job {job.status}: {job.error}"
            )
            return
        if job.verdict is not None and not job.verdict.passed:
            reasons = "; ".join(job.verdict.reasons) or "the gate failed"
            await self._update(
                saga.id,
                status="failed",
                version=job.version,
                error=f"version {job.version} did not pass the gate: {reasons}",
            )
            return
        policy = await self._policy_or_default(saga.model)
        candidate = f"{saga.model}:{job.version}"
        if self._inference is None:
            await self._compensate(saga, job, "no inference module is bound to roll it out")
            return
        try:
            rollout = await self._inference.start_rollout(
                StartRollout(
                    deployment=policy.deployment or f"{saga.model}-live",
                    candidate=candidate,
                    policy=policy.rollout,
                )
            )
        except QuarryError as exc:
            await self._compensate(saga, job, f"the rollout could not start: {exc.message}")
            return
        await self._update(
            saga.id,
            status="rolling_out",
            version=job.version,
            rollout_id=rollout.id,
            note=f"version {job.version} passed; rollout {rollout.id} started",
        )

    async def _after_rollout(self, saga: Retraining) -> None:
        assert self._inference is not None
        assert saga.rollout_id is not None
        rollout = await self._inference.get_rollout(GetRollout(id=saga.rollout_id))
        if rollout.status == "running":
            return
        last = rollout.history[-1].reason if rollout.history else ""
        judged = quality_judged(rollout)
        if rollout.status == "promoted":
            note = f"rollout promoted: {last}; {judged}"
            await self._update(saga.id, status="succeeded", note=note)
            return
        job = await self._get_job(saga.job_id or "")
        await self._compensate(saga, job, f"rollout {rollout.status}: {last}; {judged}")

    async def _compensate(self, saga: Retraining, job: TrainingJob, reason: str) -> None:
        """Undo what the job's gate did (its alias) and end the saga."""
        alias = job.spec.gate.promote_to if job.spec.gate else None
        note = reason
        if alias and job.version is not None:
            try:
                info = await self._registry.delete_alias(DeleteAlias(name=saga.model, alias=alias))
                note += f"; alias {alias!r} removed from version {info.version}"
            except NotFound:
                note += f"; alias {alias!r} was already gone"
        await self._update(
            saga.id, status="compensated", version=job.version, error=reason, note=note
        )

    # --- rows -------------------------------------------------------------------------------

    async def get(self, saga_id: str) -> Retraining:
        row = await self._db.read(
            lambda c: c.execute(sa.select(retrainings).where(retrainings.c.id == saga_id)).first()
        )
        if row is None:
            raise NotFound(f"no retraining {saga_id!r}", details={"id": saga_id})
        return _saga(row)

    async def page(
        self, model: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Retraining], str | None]:
        query = sa.select(retrainings).order_by(
            retrainings.c.created_at.desc(), retrainings.c.id.desc()
        )
        if model is not None:
            query = query.where(retrainings.c.model == model)
        if cursor is not None:
            created, last = decode_cursor(cursor, "retraining", float, str)
            query = query.where(
                sa.or_(
                    retrainings.c.created_at < created,
                    sa.and_(retrainings.c.created_at == created, retrainings.c.id < last),
                )
            )
        rows = await self._db.read(lambda c: c.execute(query.limit(limit + 1)).all())
        items = [_saga(r) for r in rows[:limit]]
        more = len(rows) > limit
        last_row = rows[limit - 1] if more else None
        return items, (
            encode_cursor("retraining", last_row.created_at, last_row.id) if last_row else None
        )

    async def _by_trigger(self, trigger: str) -> Retraining | None:
        row = await self._db.read(
            lambda c: c.execute(
                sa.select(retrainings).where(retrainings.c.trigger == trigger)
            ).first()
        )
        return None if row is None else _saga(row)

    async def _update(self, saga_id: str, *, note: str | None = None, **values: Any) -> None:
        if note is None and "error" in values:
            note = f"{values.get('status', 'failed')}: {values['error']}"

        def write(conn: Connection) -> None:
            log = conn.execute(
                sa.select(retrainings.c.log).where(retrainings.c.id == saga_id)
            ).scalar()
            conn.execute(
                retrainings.update()
                .where(retrainings.c.id == saga_id)
                .values(
                    **values,
                    log=[*(log or []), note] if note else list(log or []),
                    updated_at=time.time(),
                )
            )

        await self._db.write(write)


def quality_judged(rollout: Rollout) -> str:
    """Which quality the rollout's verdicts judged the candidate on, read from the figures each
    step recorded: realised from feedback, estimated without labels (a policy with
    ``judge_estimated`` where too little feedback arrived), or neither."""
    metric = rollout.policy.quality_metric
    realised = sum(f"candidate_{metric}" in s.figures for s in rollout.history)
    estimated = sum(f"candidate_estimated_{metric}" in s.figures for s in rollout.history)
    judged = [
        f"{what} at {count} step{'s' if count > 1 else ''}"
        for what, count in (
            (f"realised {metric} from feedback", realised),
            (f"{metric} estimated without labels", estimated),
        )
        if count
    ]
    if judged:
        return "quality judged on " + " and ".join(judged)
    unasked = "" if rollout.policy.judge_estimated else ", and judge_estimated is off"
    return f"{metric} not judged: too little feedback{unasked}"


def _refreshed(spec: TrainingJobSpec) -> TrainingJobSpec:
    """The spec with its entity rows re-stamped to now (the features as they are now) and its
    gate promoting to ``candidate``: the rollout, not the gate, decides what becomes champion."""
    dataset = spec.dataset
    if dataset.entity_rows:
        now = datetime.now(UTC).isoformat()
        rows = [{**row, EVENT_TIMESTAMP: now} for row in dataset.entity_rows]
        dataset = msgspec.structs.replace(dataset, entity_rows=rows)
    gate = spec.gate and msgspec.structs.replace(spec.gate, promote_to=CANDIDATE)
    return msgspec.structs.replace(spec, dataset=dataset, gate=gate)
