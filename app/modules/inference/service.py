"""LocalInferenceService: resolves references, loads and warms sessions, batches predictions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from app.kernel import context
from app.kernel.events import EventMeta
from app.kernel.settings import Settings
from app.modules.inference.deployments import Deployments
from app.modules.inference.inputs import prepare_inputs
from app.modules.inference.loading import Loader
from contracts.common import (
    ModelRef,
    NotFound,
    Page,
    QuarryError,
    Tensor,
    UnprocessableInput,
)
from contracts.inference import (
    DeleteDeployment,
    Deployment,
    GetDeployment,
    GetModelStatus,
    ListDeployments,
    LoadModel,
    ModelStatus,
    Predict,
    Prediction,
    PutDeployment,
    UnloadModel,
)
from contracts.registry import ModelAliasChanged, ModelVersionRegistered, RegistryService

if TYPE_CHECKING:
    from app.kernel.db import Database

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
    ) -> None:
        self._settings = settings
        self._log = logger or logging.getLogger("quarry.inference")
        self._loader = Loader(registry=registry, settings=settings, logger=self._log)
        self._deployments = Deployments(
            registry=registry,
            db=db,
            logger=self._log,
            predict_model=self._predict_model,
            resolve=self._loader.resolve,
        )

    # --- the contract -----------------------------------------------------------------------

    async def predict(self, request: Predict) -> Prediction:
        ref = ModelRef.parse(request.model)
        if ref.version is None and ref.alias is None:
            deployment = await self._deployments.find(ref.name)
            if deployment is not None:
                return await self._deployments.predict(deployment, request)
        return await self._predict_model(request.model, request)

    async def _predict_model(self, text: str, request: Predict) -> Prediction:
        served = await self._loader.serving(text)
        signature = served.model.signature
        arrays = _arrays(request, {s.name: s.dtype for s in signature.inputs})
        feeds, rows = prepare_inputs(signature, arrays, max_rows=self._settings.max_queue_rows)
        outputs = await served.batcher.submit(feeds, rows, context.current().deadline)
        return Prediction(
            model=served.model.name,
            version=served.model.version,
            outputs=_select(outputs, request.outputs),
            prediction_id=uuid.uuid4().hex,
        )

    async def load_model(self, request: LoadModel) -> ModelStatus:
        key = await self._loader.resolve(request.model)
        if self._loader.is_served(key):
            return self._loader.status(key)
        task = self._loader.load(key)
        if request.wait:
            with contextlib.suppress(QuarryError):  # a failed load is reported by the status
                await asyncio.shield(task)
        return self._loader.status(key)

    async def model_status(self, request: GetModelStatus) -> ModelStatus:
        return self._loader.status(await self._loader.resolve(request.model))

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

    def shadow_counts(self, name: str) -> tuple[int, int]:
        """Shadow runs and shadow failures recorded for a deployment in this process."""
        return self._deployments.shadow_counts(name)

    # --- events -----------------------------------------------------------------------------

    async def on_alias_changed(self, event: ModelAliasChanged, _meta: EventMeta) -> None:
        """Load and warm the alias's new version, then switch the references that follow it."""
        await self._loader.refresh(event.name)

    async def on_version_registered(self, event: ModelVersionRegistered, _meta: EventMeta) -> None:
        """A new version may change what a bare name resolves to."""
        await self._loader.refresh(event.name)

    async def close(self) -> None:
        """Stop every batcher (and shadow traffic still in flight)."""
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
    converted = array.astype(target)
    if target.kind in "iub" and not np.array_equal(converted, array):
        raise UnprocessableInput(
            f"input {name!r}: values do not fit {dtype} (expected whole numbers in range)",
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
