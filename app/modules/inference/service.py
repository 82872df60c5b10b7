"""LocalInferenceService: resolves references, loads and warms sessions, batches predictions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.kernel import context
from app.kernel.events import EventMeta
from app.kernel.settings import Settings
from app.modules.inference.batching import Batcher
from app.modules.inference.inputs import prepare_inputs
from app.modules.inference.runtime import LoadedModel, ModelCache, load_model, select_providers
from contracts.common import (
    ModelRef,
    NotFound,
    QuarryError,
    Tensor,
    Unavailable,
    UnprocessableInput,
)
from contracts.inference import (
    GetModelStatus,
    LoadModel,
    ModelStatus,
    Predict,
    Prediction,
    UnloadModel,
)
from contracts.registry import (
    FetchArtifact,
    GetVersion,
    ModelAliasChanged,
    ModelVersionRegistered,
    RegistryService,
    VersionInfo,
    read_artifact,
)

__all__ = ["LocalInferenceService"]

Key = tuple[str, int]
REF_TTL_S = 10.0
"""How long a resolved alias or bare name is trusted without an event saying it moved."""


@dataclass
class _Served:
    """A loaded version and the batcher in front of it."""

    model: LoadedModel
    batcher: Batcher


@dataclass
class _Resolved:
    key: Key
    at: float


@dataclass
class _Loads:
    tasks: dict[Key, asyncio.Task[_Served]] = field(default_factory=dict)
    failed: dict[Key, str] = field(default_factory=dict)


class LocalInferenceService:
    """Serves registry models on ONNX Runtime; see :class:`contracts.inference.InferenceService`."""

    def __init__(
        self, *, registry: RegistryService, settings: Settings, logger: logging.Logger | None = None
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._log = logger or logging.getLogger("quarry.inference")
        self._providers = select_providers(settings.inference_providers)
        self._cache = ModelCache(
            max_models=settings.max_loaded_models, max_bytes=settings.max_loaded_bytes
        )
        self._served: dict[Key, _Served] = {}
        self._refs: dict[str, _Resolved] = {}
        self._loads = _Loads()

    # --- the contract -----------------------------------------------------------------------

    async def predict(self, request: Predict) -> Prediction:
        served = await self._serving(request.model)
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
        key = await self._resolve(request.model)
        if key in self._served:
            return self._status(key)
        task = self._load(key)
        if request.wait:
            with contextlib.suppress(QuarryError):  # a failed load is reported by the status
                await asyncio.shield(task)
        return self._status(key)

    async def model_status(self, request: GetModelStatus) -> ModelStatus:
        return self._status(await self._resolve(request.model))

    async def unload_model(self, request: UnloadModel) -> ModelStatus:
        key = await self._resolve(request.model)
        served = self._served.pop(key, None)
        self._cache.remove(key)
        self._loads.failed.pop(key, None)
        if served is not None:
            await served.batcher.close()
        return self._status(key)

    # --- events -----------------------------------------------------------------------------

    async def on_alias_changed(self, event: ModelAliasChanged, _meta: EventMeta) -> None:
        """Load and warm the alias's new version, then switch the references that follow it."""
        await self._refresh(event.name)

    async def on_version_registered(self, event: ModelVersionRegistered, _meta: EventMeta) -> None:
        """A new version may change what a bare name resolves to."""
        await self._refresh(event.name)

    async def _refresh(self, name: str) -> None:
        for text in [t for t in self._refs if ModelRef.parse(t).name == name]:
            old = self._refs[text].key
            try:
                key = await self._lookup(text)
                if old in self._served and key not in self._served:
                    await self._load(key)  # warm before traffic moves
            except QuarryError as exc:
                self._log.warning("could not follow %s: %s", text, exc.message)
                self._refs.pop(text, None)
                continue
            self._refs[text] = _Resolved(key, time.monotonic())

    async def close(self) -> None:
        """Stop every batcher."""
        for served in self._served.values():
            await served.batcher.close()
        self._served.clear()

    # --- resolution and loading -------------------------------------------------------------

    async def _resolve(self, text: str) -> Key:
        ref = ModelRef.parse(text)
        if ref.version is not None:
            return (ref.name, ref.version)
        cached = self._refs.get(text)
        if cached is not None and time.monotonic() - cached.at < REF_TTL_S:
            return cached.key
        key = await self._lookup(text)
        self._refs[text] = _Resolved(key, time.monotonic())
        return key

    async def _lookup(self, text: str) -> Key:
        info = await self._registry.get_version(GetVersion(ref=text))
        return (info.name, info.version)

    async def _serving(self, text: str) -> _Served:
        key = await self._resolve(text)
        served = self._served.get(key)
        if served is not None:
            self._cache.get(key)  # mark recently used
            return served
        return await asyncio.shield(self._load(key))

    def _load(self, key: Key) -> asyncio.Task[_Served]:
        task = self._loads.tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load_now(key))
            self._loads.tasks[key] = task
            task.add_done_callback(lambda _t: self._loads.tasks.pop(key, None))
        return task

    async def _load_now(self, key: Key) -> _Served:
        name, version = key
        info = await self._registry.get_version(GetVersion(ref=f"{name}:{version}"))
        try:
            model = await self._build(info)
        except QuarryError as exc:
            self._loads.failed[key] = exc.message
            self._log.error("model %s:%s failed to load: %s", name, version, exc.message)
            raise Unavailable(
                f"model {name}:{version} cannot be served: {exc.message}",
                retry_after=30,
                details={"model": name, "version": version},
            ) from None
        served = _Served(model=model, batcher=self._batcher(model))
        self._served[key] = served
        self._loads.failed.pop(key, None)
        for evicted in self._cache.put(key, model):
            gone = self._served.pop(evicted, None)
            if gone is not None:
                await gone.batcher.close()
        self._log.info("model %s:%s ready on %s", name, version, ",".join(model.providers))
        return served

    async def _build(self, info: VersionInfo) -> LoadedModel:
        chunks = self._registry.fetch_artifact(FetchArtifact(ref=f"{info.name}:{info.version}"))
        _, data = await read_artifact(chunks)
        model = await asyncio.to_thread(
            load_model,
            info.name,
            info.version,
            data,
            info.signature,
            providers=self._providers,
            intra_op_threads=self._settings.inference_threads,
            sha256=info.sha256,
        )
        await asyncio.to_thread(model.warm_up, min(2, self._settings.max_batch_size))
        return model

    def _batcher(self, model: LoadedModel) -> Batcher:
        return Batcher(
            model,
            max_batch_size=self._settings.max_batch_size,
            max_queue_delay_ms=self._settings.max_queue_delay_ms,
            max_queue_rows=self._settings.max_queue_rows,
            runners=self._settings.inference_runners,
        )

    def _status(self, key: Key) -> ModelStatus:
        name, version = key
        served = self._served.get(key)
        if served is not None:
            signature = served.model.signature
            return ModelStatus(
                model=name,
                version=version,
                state="ready",
                inputs=signature.inputs,
                outputs=signature.outputs,
                providers=list(served.model.providers),
            )
        if key in self._loads.tasks:
            return ModelStatus(model=name, version=version, state="loading")
        if key in self._loads.failed:
            return ModelStatus(
                model=name, version=version, state="failed", error=self._loads.failed[key]
            )
        return ModelStatus(model=name, version=version, state="unloaded")


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
