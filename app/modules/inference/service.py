"""LocalInferenceService: resolves references, loads and warms sessions, batches predictions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from app.kernel import context
from app.kernel.events import EventMeta
from app.kernel.ids import unique_id
from app.kernel.settings import Settings
from app.modules.inference.batch_jobs import BatchJobs
from app.modules.inference.deployments import ROUTED, Deployments
from app.modules.inference.entities import entity_inputs
from app.modules.inference.inputs import prepare_inputs
from app.modules.inference.labels import labels_of
from app.modules.inference.loading import Loader
from app.modules.inference.records import MonitoringSink, Recorder
from app.modules.inference.rollouts import Rollouts
from app.modules.inference.settings import InferenceSettings
from contracts.common import (
    ModelRef,
    NotFound,
    Page,
    QuarryError,
    Tensor,
    Unavailable,
    UnprocessableInput,
)
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

_BUILT_INPUTS: ContextVar[dict[str, Tensor] | None] = ContextVar("built_inputs", default=None)
"""The inputs a predict-by-entity call built, for its prediction record."""
_SERVED: ContextVar[tuple[str, int] | None] = ContextVar("served", default=None)
"""The model version a call resolved to, so that a later failure is recorded against it."""


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
        self._features = features
        self._registry = registry
        self._log = logger or logging.getLogger("quarry.inference")
        self._loader = Loader(registry=registry, settings=settings, logger=self._log)
        self._deployments = Deployments(
            registry=registry,
            db=db,
            logger=self._log,
            predict_model=self._predict_model,
            resolve=self._loader.resolve,
            refresh=self._loader.refresh,
        )
        self.records = recorder or Recorder(
            MonitoringSink(monitoring) if monitoring is not None else None,
            sample=self._config.prediction_log_sample,
            logger=self._log,
        )
        """Prediction records of this process, handed to monitoring in the background."""
        self._batch_jobs = (
            BatchJobs(db=db, tasks=tasks, predict=self.predict, pin=self._pin, logger=self._log)
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
        _BUILT_INPUTS.set(None)
        ROUTED.set(None)
        _SERVED.set(None)
        try:
            prediction = await self._predict(request)
        except QuarryError as exc:
            self._record_error(request, exc.code, started)
            raise
        except Exception:
            self._record_error(request, "internal", started)
            raise
        self.records.record(
            prediction_id=prediction.prediction_id,
            model=prediction.model,
            version=prediction.version,
            status="ok",
            latency_s=time.perf_counter() - started,
            outputs=prediction.outputs,
            inputs=request.inputs or _BUILT_INPUTS.get(),
            deployment=prediction.deployment,
        )
        return prediction

    def _record_error(self, request: Predict, code: str, started: float) -> None:
        # A failure counts against the version it happened on: the one a deployment routed to,
        # else the one the reference resolved to; none when it failed before either was known.
        routed = ROUTED.get()
        served = _SERVED.get()
        model, version = (
            routed[1] if routed is not None else served if served else (request.model, None)
        )
        self.records.record(
            prediction_id=unique_id(),
            model=model,
            version=version,
            status=code,
            latency_s=time.perf_counter() - started,
            inputs=request.inputs,
            deployment=routed[0] if routed is not None else None,
        )

    async def _predict(self, request: Predict) -> Prediction:
        ref = ModelRef.parse(request.model)
        if ref.version is None and ref.alias is None:
            deployment = await self._deployments.find(ref.name)
            if deployment is not None:
                return await self._deployments.predict(deployment, request)
        return await self._predict_model(request.model, request)

    async def _predict_model(self, text: str, request: Predict) -> Prediction:
        served = await self._loader.serving(text)
        _SERVED.set((served.model.name, served.model.version))
        signature = served.model.signature
        if request.entities:
            inputs = await entity_inputs(self._features, served.model, request)
            _BUILT_INPUTS.set(inputs)  # what the prediction record logs for this call
            request = msgspec.structs.replace(request, inputs=inputs, coerce=True)
        arrays = _arrays(request, {s.name: s.dtype for s in signature.inputs})
        feeds, rows = prepare_inputs(signature, arrays, max_rows=self._config.max_queue_rows)
        outputs = await served.batcher.submit(feeds, rows, context.current().deadline)
        return Prediction(
            model=served.model.name,
            version=served.model.version,
            outputs=_select(outputs, request.outputs),
            prediction_id=unique_id(),
            labels=labels_of(served.model.classes, outputs),
        )

    async def load_model(self, request: LoadModel) -> ModelStatus:
        key = await self._loader.resolve(request.model)
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
        key = await self._loader.resolve(request.model)
        if not self._loader.is_served(key):
            await self._loader.check_exists(key)
        return self._loader.status(key)

    async def unload_model(self, request: UnloadModel) -> ModelStatus:
        key = await self._loader.resolve(request.model)
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
            and await self._deployments.find(ref.name) is not None
        ):
            return ref.name
        info = await self._registry.get_version(GetVersion(ref=text))
        return f"{info.name}:{info.version}"

    def shadow_counts(self, name: str) -> tuple[int, int]:
        """Shadow runs and shadow failures recorded for a deployment in this process."""
        return self._deployments.shadow_counts(name)

    # --- events -----------------------------------------------------------------------------

    async def on_alias_changed(self, event: ModelAliasChanged, _meta: EventMeta) -> None:
        """Load and warm the alias's new version, then switch the references (and the
        deployment routes) that follow it."""
        await self._deployments.alias_moved(event.name)

    async def on_version_registered(self, event: ModelVersionRegistered, _meta: EventMeta) -> None:
        """A new version may change what a bare name resolves to."""
        await self._loader.refresh(event.name)

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
        self._deployments.close()
        await self._loader.close()


def _arrays(request: Predict, dtypes: dict[str, str]) -> dict[str, np.ndarray[Any, Any]]:
    arrays = {}
    for name, tensor in request.inputs.items():
        array = tensor.to_numpy()
        if request.coerce and name in dtypes:
            array = _coerce(name, array, dtypes[name])
        arrays[name] = array
    return arrays


def _coerce(name: str, array: np.ndarray[Any, Any], dtype: str) -> np.ndarray[Any, Any]:
    """Convert a number array from a text format to ``dtype`` when every value fits."""
    if dtype == "BYTES" or array.dtype.kind not in "biuf":
        return array
    target = np.dtype(_numpy_name(dtype))
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(target)
    if target.kind in "iub" and not np.array_equal(converted, array):
        raise UnprocessableInput(
            f"input {name!r}: values do not fit {dtype} (expected whole numbers in range)",
            details={"input": name, "expected": dtype},
        )
    # A finite number too large for the float type would become infinity: refused, as /v2 does.
    if target.kind == "f" and not np.array_equal(np.isfinite(converted), np.isfinite(array)):
        raise UnprocessableInput(
            f"input {name!r} has values outside the range of {dtype}",
            details={"input": name, "expected": dtype},
        )
    return converted


def _numpy_name(dtype: str) -> str:
    names = {"FP16": "float16", "FP32": "float32", "FP64": "float64", "BOOL": "bool"}
    return names.get(dtype, dtype.lower())


def _select(outputs: dict[str, np.ndarray[Any, Any]], wanted: list[str]) -> dict[str, Tensor]:
    if not wanted:
        return {name: Tensor.from_numpy(array) for name, array in outputs.items()}
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise NotFound(
            f"the model has no output {missing[0]!r} (it has {', '.join(outputs)})",
            details={"output": missing[0], "outputs": list(outputs)},
        )
    return {name: Tensor.from_numpy(outputs[name]) for name in wanted}
