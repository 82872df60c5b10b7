"""``LocalTrainingService``: jobs in the module's table, runs on the task queue.

Submission checks what it can (trainer, hyperparameters, dataset shape, gate metric and
baseline alias), stores the job as ``queued`` and sends ``training.run_job`` on the ``training``
queue, whose actor runs :class:`~app.modules.training.runner.JobRunner` on a worker thread (an
in-process one on the embedded broker, a ``quarry worker`` on Redis). A watchdog re-sends jobs
whose run went silent (a dead worker).

On the embedded broker each process has a queue of its own, so only the process leading
``training.watchdog`` sends jobs to its queue: it sends those submitted to it at once and looks
for queued ones every :data:`DISPATCH_S` (submitted to another process sharing the data, or queued
before a restart). The others leave the jobs they take queued. So ``quarry serve --workers N``
runs at most ``QUARRY_TRAINING_PROCESSES`` jobs at once, as one process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import msgspec

from app.kernel import context, singleton
from app.kernel.backoff import Backoff
from app.kernel.cursors import decode_cursor, encode_cursor
from app.kernel.settings import ConfigError
from app.kernel.sources import SourcePolicy
from app.modules.training import store
from app.modules.training.evaluation import check_gate
from app.modules.training.joblog import read_job_logs
from app.modules.training.retraining import Retrainings
from app.modules.training.runner import JobRunner
from app.modules.training.settings import TrainingSettings
from app.modules.training.table import check_table
from app.modules.training.trainers import TrainerRegistry
from contracts.common import MAX_TIME_LIMIT_S, InvalidInput, NotFound, Page, validate_name
from contracts.features import FeaturesService, GetFeatureService
from contracts.inference import InferenceService
from contracts.registry import GetModel, RegistryService
from contracts.training import (
    CancelTrainingJob,
    Dataset,
    GetJobLogs,
    GetRetraining,
    GetRetrainingPolicy,
    GetTrainingJob,
    JobLogs,
    ListRetrainings,
    ListTrainers,
    ListTrainingJobs,
    PutRetrainingPolicy,
    Retrain,
    Retraining,
    RetrainingPolicy,
    SubmitTrainingJob,
    TrainerList,
    TrainingJob,
    TrainingJobFinished,
    TrainingJobSpec,
)

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events import Outbox
    from app.kernel.settings import Settings
    from app.kernel.tasks import TaskQueue

__all__ = ["ACTOR", "QUEUE", "LocalTrainingService"]

ACTOR = "training.run_job"
QUEUE = "training"
MAX_RETRIES = 3
"""Retries of a message whose run hit a transient error (a dependency unavailable)."""
MAX_PAGE = 200
MAX_ATTEMPTS = 10
DISPATCH_S = 1.0
"""How often the leading process looks for queued jobs to send (embedded broker)."""


class LocalTrainingService:
    """See :class:`contracts.training.TrainingService`."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        tasks: TaskQueue,
        registry: RegistryService,
        features: FeaturesService | None,
        inference: InferenceService | None,
        settings: Settings,
        logger: logging.Logger,
        trainers: TrainerRegistry | None = None,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._tasks = tasks
        self._registry = registry
        self._features = features
        self._log = logger
        self._settings = settings
        self._config = config = settings.module_config(TrainingSettings)
        if not 0 < config.max_time_limit_s <= MAX_TIME_LIMIT_S:
            raise ConfigError(
                "QUARRY_TRAINING_MAX_TIME_LIMIT_S must be above 0 and at most"
                f" {MAX_TIME_LIMIT_S:.0f} seconds (30 days)"
            )
        self._trainers = trainers or TrainerRegistry.default()
        self._trainers.discover(config.trainers)
        local = [root for root in config.source_roots if "://" not in root]  # s3:// is views'
        self._sources = SourcePolicy.of(local, config.source_databases, settings.data_dir)
        self.runner = JobRunner(
            db=db,
            outbox=outbox,
            registry=registry,
            features=features,
            inference=inference,
            trainers=self._trainers,
            trainer_modules=config.trainers,
            processes=config.processes,
            resend=self._send,
            heartbeat_s=config.heartbeat_s,
            stale_s=config.stale_s,
            logger=logger,
            sources=self._sources,
        )
        self._actor = tasks.actor(
            self._run,
            name=ACTOR,
            queue_name=QUEUE,
            max_retries=MAX_RETRIES,
            time_limit_ms=24 * 3600 * 1000,  # each message carries its job's own limit
        )
        tasks.dedicate(QUEUE, config.processes)  # one training process per thread
        self._lease = singleton.lease("training.watchdog", db=db, settings=settings)
        self._loops: list[asyncio.Task[None]] = []
        self._resent: dict[str, float] = {}
        self._sent: set[str] = set()
        """Jobs whose message waits in this process's embedded queue."""
        self.retrainings = Retrainings(
            db=db,
            registry=registry,
            inference=inference,
            submit=lambda spec: self.submit_job(SubmitTrainingJob(spec=spec)),
            get_job=lambda job_id: self.get_job(GetTrainingJob(id=job_id)),
            logger=logger,
        )

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Capture the loop contract calls run on; check the queued jobs can still run; start
        the watchdog and, on the embedded broker, the dispatch of queued jobs."""
        self.runner.loop = asyncio.get_running_loop()
        for job_id in await self._queued():
            await self._take_up(job_id, send=False, when="at start-up")
        watch = singleton.run_as_singleton(
            self._lease, self._watch, interval_s=self._config.heartbeat_s, logger=self._log
        )
        self._loops.append(asyncio.create_task(watch, name="training-watchdog"))
        if self._tasks.in_process:
            self._loops.append(asyncio.create_task(self._dispatch(), name="training-dispatch"))

    async def close(self) -> None:
        """Stop the loops; running jobs notice the event loop is gone at their next contract
        call."""
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()
        self.runner.loop = None

    @property
    def _dispatching(self) -> bool:
        """Whether this process sends jobs to the task queue: any process on a shared broker,
        only the leader of ``training.watchdog`` on the embedded one."""
        return not self._tasks.in_process or self._lease.held

    async def _dispatch(self) -> None:
        """While this process leads, send the queued jobs not yet in its queue, every
        :data:`DISPATCH_S`; an outage backs off, logged once at each end."""
        failures = Backoff("sending queued training jobs", self._log, base_s=DISPATCH_S, cap_s=30)
        while True:
            pause = DISPATCH_S
            if self._lease.held:
                try:
                    for job_id in await self._queued():
                        if job_id not in self._sent:
                            await self._take_up(job_id, send=True, when="when sent")
                except Exception as exc:
                    pause = failures.failed(exc)
                else:
                    failures.succeeded()
            await asyncio.sleep(pause)

    async def _queued(self) -> list[str]:
        return await self._db.read(lambda conn: store.stale_or_queued(conn, 0.0, queued=True))

    def _run(self, job_id: str) -> None:
        """The actor: the job's message has left the queue (unless the queue retries it)."""
        self._sent.discard(job_id)
        try:
            self.runner.run(job_id)
        except Exception:
            self._sent.add(job_id)  # raised for the task queue to retry the message
            raise

    async def _watch(self) -> None:
        """One watchdog round (in the replica leading ``training.watchdog``): re-send the jobs
        whose heartbeat went silent; a failing round is logged and the next one may work."""
        stale = self._config.stale_s
        now = time.time()
        ids = await self._db.read(
            lambda conn: store.stale_or_queued(conn, now - stale, queued=False)
        )
        for job_id in ids:
            if now - self._resent.get(job_id, 0.0) >= stale:
                self._log.warning("training job %s went silent: running it again", job_id)
                self._resent[job_id] = now
                await self._send(job_id)
        await self.retrainings.schedule_round()
        await self.retrainings.advance_all()

    async def _take_up(self, job_id: str, *, send: bool, when: str) -> None:
        """Take up a queued job that is in no queue of this process: one queued before this
        start (the embedded broker's messages died with the last process) or submitted to
        another process sharing the data; ``send`` it. A job that cannot run (a spec stored
        before today's bounds) or be sent is failed with the reason; the others go on."""
        try:
            problem = await self._db.read(lambda conn: store.spec_problem(conn, job_id))
            if problem is None and send:
                await self._send(job_id)
        except Exception as exc:  # whatever it was, it is this job's alone
            problem = f"it could not be queued again: {exc}"
        if problem is None:
            return
        self._log.error("training job %s failed: %s", job_id, problem)
        reason = f"failed {when}: {problem}"
        now = time.time()

        def fail(conn: Any) -> None:
            model = store.model_of(conn, job_id)
            if model is not None and store.finish(
                conn, job_id, None, now, status="failed", error=reason
            ):
                finished = TrainingJobFinished(
                    id=job_id, model=model, status="failed", error=reason
                )
                self._outbox.add(conn, finished)

        await self._db.write(fail)

    async def _send(self, job_id: str) -> None:
        job = await self._db.read(lambda conn: store.get(conn, job_id))
        if job is None:
            return
        # The run checks its own limit at every epoch; the task queue's is a backstop after it.
        limit_ms = int((job.spec.time_limit_s + 60) * 1000)
        self._sent.add(job_id)
        await asyncio.to_thread(self._actor.send_with_options, args=(job_id,), time_limit=limit_ms)

    # --- the contract -----------------------------------------------------------------------

    async def submit_job(self, request: SubmitTrainingJob) -> TrainingJob:
        spec = request.spec
        await self._check(spec)
        job_id = uuid.uuid4().hex
        job = await self._db.write(lambda conn: store.insert(conn, job_id, spec, time.time()))
        if self._dispatching:  # else it stays queued for the leader's dispatch
            await self._send(job_id)
        return job

    async def get_job(self, request: GetTrainingJob) -> TrainingJob:
        job = await self._db.read(lambda conn: store.get(conn, request.id))
        if job is None:
            raise NotFound(f"no training job {request.id!r}", details={"id": request.id})
        return job

    async def get_job_logs(self, request: GetJobLogs) -> JobLogs:
        return await read_job_logs(self._db, request)

    async def list_jobs(self, request: ListTrainingJobs) -> Page[TrainingJob]:
        if not 1 <= request.limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        cursor = decode_cursor(request.cursor, "job", float, str) if request.cursor else None
        items, after = await self._db.read(
            lambda conn: store.page(conn, request.limit, cursor, request.status)
        )
        return Page(
            items=items, next_cursor=None if after is None else encode_cursor("job", *after)
        )

    async def cancel_job(self, request: CancelTrainingJob) -> TrainingJob:
        job = await self.get_job(GetTrainingJob(id=request.id))
        now = time.time()

        def cancel(conn: Any) -> None:
            if store.finish(
                conn, job.id, None, now, status="cancelled", error="cancelled on request"
            ):
                self._outbox.add(
                    conn,
                    TrainingJobFinished(
                        id=job.id,
                        model=job.spec.model,
                        status="cancelled",
                        error="cancelled on request",
                    ),
                )
            else:
                store.cancel(conn, job.id, now)

        await self._db.write(cancel)
        return await self.get_job(GetTrainingJob(id=request.id))

    async def list_trainers(self, request: ListTrainers) -> TrainerList:
        return TrainerList(items=self._trainers.infos())

    async def put_retraining_policy(self, request: PutRetrainingPolicy) -> RetrainingPolicy:
        job = request.policy.job
        if job is not None:
            if job.model != request.policy.model:
                raise InvalidInput(
                    f"the policy's job trains {job.model!r}, not {request.policy.model!r}",
                    details={"field": "policy.job.model"},
                )
            await self._check(job)  # as a submission would be, so a saga cannot fail on it
        return await self.retrainings.put_policy(request.policy)

    async def get_retraining_policy(self, request: GetRetrainingPolicy) -> RetrainingPolicy:
        return await self.retrainings.get_policy(request.model)

    async def retrain(self, request: Retrain) -> Retraining:
        validate_name(request.model, what="model name")
        trigger = f"manual:{context.current().idempotency_key or uuid.uuid4().hex}"
        return await self.retrainings.start(request.model, trigger, request.reason)

    async def get_retraining(self, request: GetRetraining) -> Retraining:
        return await self.retrainings.get(request.id)

    async def list_retrainings(self, request: ListRetrainings) -> Page[Retraining]:
        if not 1 <= request.limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        items, cursor = await self.retrainings.page(request.model, request.limit, request.cursor)
        return Page(items=items, next_cursor=cursor)

    # --- submission checks ------------------------------------------------------------------

    async def _check(self, spec: TrainingJobSpec) -> None:
        validate_name(spec.model, what="model name")
        trainer = self._trainers.get(spec.trainer)
        self._trainers.check_hyperparameters(spec.trainer, spec.hyperparameters)
        dataset = spec.dataset
        _check_dataset(dataset)
        if not 0 < spec.split.validation < 1:
            raise InvalidInput("split.validation must be between 0 and 1 (exclusive)")
        if not 1 <= spec.max_attempts <= MAX_ATTEMPTS:
            raise InvalidInput(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
        _check_bounds(spec)
        longest = self._config.max_time_limit_s
        if not 0 < spec.time_limit_s <= longest:
            raise InvalidInput(
                f"time_limit_s must be above 0 and at most {longest:g} seconds"
                " (QUARRY_TRAINING_MAX_TIME_LIMIT_S)",
                details={"field": "time_limit_s", "maximum": longest},
            )
        if dataset.feature_service:
            await self._check_feature_service(dataset.feature_service)
        if dataset.source is not None:
            await asyncio.to_thread(
                check_table,
                dataset.source,
                dataset.features,
                dataset.label,
                trainer.task,
                self._sources,
            )
        if spec.gate is not None:
            check_gate(spec.gate, trainer.task)
            if spec.gate.baseline:
                await self._check_baseline(spec.model, spec.gate.baseline)

    async def _check_feature_service(self, text: str) -> None:
        if self._features is None:
            raise InvalidInput(
                "the dataset names a feature service, but no features module is bound here"
                " (set QUARRY_REMOTE_FEATURES)"
            )
        name, _, number = text.partition(":")
        try:
            await self._features.get_service(
                GetFeatureService(name=name, version=int(number) if number.isdigit() else None)
            )
        except NotFound:
            raise InvalidInput(f"dataset.feature_service {text!r} does not exist") from None

    async def _check_baseline(self, model: str, alias: str) -> None:
        """A gate's baseline alias must exist when the model does (a new model has none)."""
        try:
            info = await self._registry.get_model(GetModel(name=model))
        except NotFound:
            return
        if alias not in info.aliases:
            known = ", ".join(sorted(info.aliases)) or "none"
            raise InvalidInput(
                f"the gate's baseline alias {alias!r} is not set on model {model!r}"
                f" (aliases: {known})",
                details={"model": model, "alias": alias},
            )


def _check_bounds(spec: TrainingJobSpec) -> None:
    """The contract's bounds (seed, time limit...), also for a spec built in-process, which
    no decoder checked."""
    try:
        msgspec.convert(msgspec.to_builtins(spec), TrainingJobSpec)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid job spec: {exc}") from None


def _check_dataset(dataset: Dataset) -> None:
    if not dataset.label:
        raise InvalidInput("dataset.label is required: the column or view:feature to predict")
    if dataset.source is not None:
        _check_table_dataset(dataset)
        return
    entities = bool(dataset.entity_rows) or dataset.entity_source is not None
    if not entities and not dataset.rows:
        raise InvalidInput("the dataset is empty: give entity_rows, an entity_source or rows")
    if dataset.entity_rows and dataset.entity_source is not None:
        raise InvalidInput("give either dataset.entity_rows or dataset.entity_source, not both")
    if entities and dataset.rows:
        raise InvalidInput("give either dataset.entity_rows or dataset.rows, not both")
    if entities and not dataset.feature_service:
        raise InvalidInput("dataset.entity_rows need a dataset.feature_service")
    if not dataset.feature_service and not dataset.features:
        raise InvalidInput("name the input columns: dataset.features or dataset.feature_service")
    if dataset.rows and any(dataset.label not in row for row in dataset.rows[:1000]):
        raise InvalidInput(f"dataset.rows lack the label {dataset.label!r}")


def _check_table_dataset(dataset: Dataset) -> None:
    """A plain table: a source with its feature and label columns, and nothing else."""
    others = {
        "feature_service": dataset.feature_service,
        "entity_rows": dataset.entity_rows,
        "entity_source": dataset.entity_source,
        "rows": dataset.rows,
    }
    given = [name for name, value in others.items() if value]
    if given:
        raise InvalidInput(
            f"dataset.source is trained on directly: give no dataset.{given[0]} with it",
            details={"field": f"dataset.{given[0]}"},
        )
    source = dataset.source
    if source is not None and (source.entities or source.columns):
        raise InvalidInput(
            "a dataset's source names its columns in dataset.features and dataset.label,"
            " not in source.entities or source.columns",
            details={"field": "dataset.source"},
        )
    if not dataset.features:
        raise InvalidInput(
            "dataset.features must name the source's input columns",
            details={"field": "dataset.features"},
        )
    repeated = sorted({f for f in dataset.features if dataset.features.count(f) > 1})
    if repeated:
        raise InvalidInput(
            f"dataset.features names {repeated[0]!r} twice", details={"column": repeated[0]}
        )
    if dataset.label in dataset.features:
        raise InvalidInput(
            f"the label column {dataset.label!r} is also in dataset.features",
            details={"column": dataset.label},
        )
