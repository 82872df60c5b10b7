"""LocalInferenceService: resolves references, loads and warms sessions, batches predictions.

A prediction goes one way: the resolver says what the reference means (a deployment or a model
version), a deployment answers a plan (:class:`~app.modules.inference.deployments.Plan`), the
runner runs it and answers one :class:`~app.modules.inference.running.Outcome`, and the service
records that outcome, then returns its prediction or raises its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from app.kernel.events import EventMeta
from app.kernel.ids import ordered_id
from app.kernel.settings import Settings
from app.modules.inference.batch_jobs import BatchJobs
from app.modules.inference.deployments import Deployments
from app.modules.inference.loading import Loader
from app.modules.inference.records import MonitoringSink, Recorder
from app.modules.inference.resolver import Resolver
from app.modules.inference.rollouts import Rollouts
from app.modules.inference.running import Outcome, Runner
from app.modules.inference.settings import InferenceSettings
from contracts.common import ModelRef, Page, QuarryError, Unavailable
from contracts.inference import (
    AbortRollout,
    BatchJob,
    BatchResultChunk,
    DeleteDeployment,
    Deployment,
    FetchBatchResults,
    GetBatchJob,
    GetDeployment,
    GetModelStatus,
    GetRollout,
    ListDeployments,
    ListRollouts,
    LoadModel,
    ModelStatus,
    Predict,
    Prediction,
    PromoteRollout,
    PutDeployment,
    Rollout,
    StartRollout,
    SubmitBatchJob,
    UnloadModel,
)
from contracts.registry import (
    GetVersion,
    ModelAliasChanged,
    ModelVersionRegistered,
    RegistryService,
)

if TYPE_CHECKING:
    from app.kernel.db import Database
    from app.kernel.events import Outbox
    from app.kernel.tasks import TaskQueue
    from contracts.features import FeaturesService
    from contracts.monitoring import MonitoringService

__all__ = ["LocalInferenceService"]


class LocalInferenceService:
    """Serves registry models on ONNX Runtime; see :class:`contracts.inference.InferenceService`."""

    def __init__(
        self,
        *,
        registry: RegistryService,
        settings: Settings,
        logger: logging.Logger | None = None,
        db: Database | None = None,
        recorder: Recorder | None = None,
        tasks: TaskQueue | None = None,
        features: FeaturesService | None = None,
        monitoring: MonitoringService | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._settings = settings
        self._config = settings.module_config(InferenceSettings)
        self._registry = registry
        self._log = logger or logging.getLogger("quarry.inference")
        self._loader = Loader(registry=registry, settings=settings, logger=self._log)
        self._resolver = Resolver(
            registry=registry, db=db, logger=self._log, follow=self._loader.follow
        )
        self._deployments = Deployments(registry=registry, db=db, resolver=self._resolver)
        self._runner = Runner(
            loader=self._loader,
            resolver=self._resolver,
            answers=self._deployments.answers,
            features=features,
            max_rows=self._config.max_queue_rows,
            logger=self._log,
        )
        self.records = recorder or Recorder(
            MonitoringSink(monitoring) if monitoring is not None else None,
            sample=self._config.prediction_log_sample,
            logger=self._log,
        )
        """Prediction records of this process, handed to monitoring in the background."""
        self._batch_jobs = (
            BatchJobs(
                db=db,
                tasks=tasks,
                predict=self.predict,
                pin=self._pin,
                logger=self._log,
                settings=settings,
            )
            if db is not None and tasks is not None
            else None
        )
        self.rollouts = (
            Rollouts(
                db=db,
                outbox=outbox,
                registry=registry,
                monitoring=monitoring,
                deployments=self._deployments,
                settings=settings,
                logger=self._log,
                warm=lambda ref: self.load_model(LoadModel(model=ref)),
            )
            if db is not None and outbox is not None
            else None
        )
        """Progressive rollouts (``step_once`` checks the due ones); ``None`` without a database."""

    # --- the contract -----------------------------------------------------------------------

    async def predict(self, request: Predict) -> Prediction:
        started = time.perf_counter()
        try:
            target = await self._resolver.target(request.model)
            if isinstance(target, tuple):  # a model version runs as it is: no plan to make
                running = self._runner.run_model(target, request)
            else:
                running = self._runner.run(await self._deployments.plan(target, request), request)
        except Exception as exc:
            outcome = Outcome(error=exc)
        else:
            outcome = await running
        self._record(request, outcome, started)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.prediction is not None
        return outcome.prediction

    def _record(self, request: Predict, outcome: Outcome, started: float) -> None:
        prediction = outcome.prediction
        if prediction is not None:
            self.records.record(
                prediction_id=prediction.prediction_id,
                model=prediction.model,
                version=prediction.version,
                status="ok",
                latency_s=time.perf_counter() - started,
                outputs=prediction.outputs,
                inputs=request.inputs or outcome.inputs or None,
                deployment=prediction.deployment,
            )
            return
        # A failure counts against the version it happened on: the one a deployment routed to,
        # else the one the reference resolved to; none when it failed before either was known.
        error = outcome.error
        model, version = outcome.served or (request.model, None)
        self.records.record(
            prediction_id=ordered_id(),
            model=model,
            version=version,
            status=error.code if isinstance(error, QuarryError) else "internal",
            latency_s=time.perf_counter() - started,
            inputs=request.inputs,
            deployment=outcome.deployment,
        )

    async def load_model(self, request: LoadModel) -> ModelStatus:
        key = await self._resolver.version(request.model)
        if self._loader.is_served(key):
            return self._loader.status(key)
        await self._loader.check_exists(
            key
        )  # a version that is not there is NotFound, not "loading"
        if not request.wait and not self._loader.may_load(key):
            return self._loader.status(key)  # failed: a ready probe waits for the backoff
        task = self._loader.load(key)  # an explicit load retries a failed one at once
        if request.wait:
            with contextlib.suppress(QuarryError):  # a failed load is reported by the status
                await asyncio.shield(task)
        return self._loader.status(key)

    async def model_status(self, request: GetModelStatus) -> ModelStatus:
        key = await self._resolver.version(request.model)
        if not self._loader.is_served(key):
            await self._loader.check_exists(key)
        return self._loader.status(key)

    async def unload_model(self, request: UnloadModel) -> ModelStatus:
        key = await self._resolver.version(request.model)
        await self._loader.unload(key)
        return self._loader.status(key)

    # --- deployments ------------------------------------------------------------------------

    async def put_deployment(self, request: PutDeployment) -> Deployment:
        return await self._deployments.put(request.deployment)

    async def get_deployment(self, request: GetDeployment) -> Deployment:
        return await self._deployments.get(request.name)

    async def list_deployments(self, request: ListDeployments) -> Page[Deployment]:
        return await self._deployments.page(request.limit, request.cursor)

    async def delete_deployment(self, request: DeleteDeployment) -> Deployment:
        return await self._deployments.delete(request.name)

    # --- batch jobs -------------------------------------------------------------------------

    async def submit_batch_job(self, request: SubmitBatchJob) -> BatchJob:
        return await self._jobs().submit(request)

    async def get_batch_job(self, request: GetBatchJob) -> BatchJob:
        return await self._jobs().get(request.id)

    def fetch_batch_results(self, request: FetchBatchResults) -> AsyncIterator[BatchResultChunk]:
        return self._jobs().results(request.id)

    def _jobs(self) -> BatchJobs:
        if self._batch_jobs is None:
            raise Unavailable("batch jobs need the module's database and task queue")
        return self._batch_jobs

    # --- rollouts ---------------------------------------------------------------------------

    async def start_rollout(self, request: StartRollout) -> Rollout:
        return await self._rollouts().start(request)

    async def get_rollout(self, request: GetRollout) -> Rollout:
        return await self._rollouts().get(request.id)

    async def list_rollouts(self, request: ListRollouts) -> Page[Rollout]:
        return await self._rollouts().page(request.deployment, request.limit, request.cursor)

    async def promote_rollout(self, request: PromoteRollout) -> Rollout:
        return await self._rollouts().promote(request.id, request.reason)

    async def abort_rollout(self, request: AbortRollout) -> Rollout:
        return await self._rollouts().abort(request.id, request.reason)

    def _rollouts(self) -> Rollouts:
        if self.rollouts is None:
            raise Unavailable("rollouts need the inference module's database", retry_after=60)
        return self.rollouts

    async def _pin(self, text: str) -> str:
        """What a batch job runs: a deployment's name, or the version ``text`` resolves to."""
        ref = ModelRef.parse(text)
        if (
            ref.version is None
            and ref.alias is None
            and await self._resolver.deployment(ref.name) is not None
        ):
            return ref.name
        info = await self._registry.get_version(GetVersion(ref=text))
        return f"{info.name}:{info.version}"

    def shadow_counts(self, name: str) -> tuple[int, int]:
        """Shadow runs and shadow failures recorded for a deployment in this process."""
        return self._runner.shadow_counts(name)

    # --- events -----------------------------------------------------------------------------

    async def on_alias_changed(self, event: ModelAliasChanged, _meta: EventMeta) -> None:
        """Load and warm the alias's new version, then switch the references (and the
        deployment routes) that follow it."""
        await self._deployments.alias_moved(event.name)

    async def on_version_registered(self, event: ModelVersionRegistered, _meta: EventMeta) -> None:
        """A new version may change what a bare name resolves to."""
        await self._resolver.refresh(event.name)

    async def start(self) -> None:
        """Start handing prediction records to monitoring in the background, and the stepper
        of running rollouts."""
        await self.records.start()
        if self._batch_jobs is not None:
            await self._batch_jobs.start()
        if self.rollouts is not None:
            self.rollouts.start_loop()

    async def close(self) -> None:
        """Stop the rollout stepper, every batcher (and shadow traffic still in flight), then
        the record flusher."""
        if self.rollouts is not None:
            await self.rollouts.close()
        if self._batch_jobs is not None:
            self._batch_jobs.close()
        await self.records.stop()
        self._runner.close()
        await self._loader.close()
