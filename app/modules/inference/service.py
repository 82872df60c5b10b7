"""LocalInferenceService: resolves references, loads and warms sessions, batches predictions."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from app.kernel import context
from app.kernel.events import EventMeta
from app.kernel.settings import Settings
from app.modules.inference import store
from app.modules.inference.batching import Batcher
from app.modules.inference.inputs import prepare_inputs
from app.modules.inference.runtime import LoadedModel, ModelCache, load_model, select_providers
from contracts.common import (
    Conflict,
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    ModelRef,
    NotFound,
    Page,
    QuarryError,
    Tensor,
    Unavailable,
    UnprocessableInput,
    validate_name,
)
from contracts.inference import (
    DeleteDeployment,
    Deployment,
    Fallback,
    GetDeployment,
    GetModelStatus,
    ListDeployments,
    LoadModel,
    ModelStatus,
    Predict,
    Prediction,
    PutDeployment,
    Route,
    UnloadModel,
)
from contracts.registry import (
    FetchArtifact,
    GetModel,
    GetVersion,
    ModelAliasChanged,
    ModelVersionRegistered,
    RegistryService,
    VersionInfo,
    read_artifact,
)

if TYPE_CHECKING:
    from app.kernel.db import Database

__all__ = ["LocalInferenceService"]

Key = tuple[str, int]
REF_TTL_S = 10.0
"""How long a resolved alias or bare name is trusted without an event saying it moved."""
DEPLOYMENT_TTL_S = 2.0
"""How long a deployment read from the database is trusted (other processes may change it)."""
PRIMARY_SHARE = 0.8
"""With fallbacks, the share of the call's remaining time the primary route may use."""
MAX_LIST = 500
FALLIBLE = (Unavailable, DeadlineExceeded, InternalError)
"""Failures of the primary that fallbacks answer for (input errors are the caller's)."""


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


@dataclass
class _Deployments:
    """Deployments read from the database, response caches and shadow traffic counters."""

    known: dict[str, tuple[Deployment | None, float]] = field(default_factory=dict)
    caches: dict[str, OrderedDict[tuple[Key, str], tuple[float, Prediction]]] = field(
        default_factory=dict
    )
    cache_hits: dict[str, int] = field(default_factory=dict)
    shadow_runs: dict[str, int] = field(default_factory=dict)
    shadow_failures: dict[str, int] = field(default_factory=dict)
    shadow_tasks: set[asyncio.Task[None]] = field(default_factory=set)


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
        self._registry = registry
        self._db = db
        self._deployments = _Deployments()
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
        ref = ModelRef.parse(request.model)
        if ref.version is None and ref.alias is None:
            deployment = await self._deployment(ref.name)
            if deployment is not None:
                return await self._predict_deployment(deployment, request)
        return await self._predict_model(request.model, request)

    async def _predict_model(self, text: str, request: Predict) -> Prediction:
        served = await self._serving(text)
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

    # --- deployments ------------------------------------------------------------------------

    async def put_deployment(self, request: PutDeployment) -> Deployment:
        deployment = request.deployment
        await self._check_deployment(deployment)
        now = datetime.now(UTC)
        stored = await self._database().write(
            lambda conn: store.put_deployment(conn, deployment, now)
        )
        self._forget(deployment.name)
        return stored

    async def get_deployment(self, request: GetDeployment) -> Deployment:
        name = validate_name(request.name)
        found = await self._database().read(lambda conn: store.get_deployment(conn, name))
        if found is None:
            raise _no_deployment(name)
        return found

    async def list_deployments(self, request: ListDeployments) -> Page[Deployment]:
        limit = request.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(
                f"invalid limit {limit!r}: expected 1 to {MAX_LIST}",
                details={"field": "limit", "max": MAX_LIST},
            )
        after = _decode_cursor(request.cursor) if request.cursor else None
        items = await self._database().read(
            lambda conn: store.page_deployments(conn, after=after, limit=limit)
        )
        more = len(items) > limit
        items = items[:limit]
        return Page(items=items, next_cursor=_encode_cursor(items[-1].name) if more else None)

    async def delete_deployment(self, request: DeleteDeployment) -> Deployment:
        name = validate_name(request.name)
        gone = await self._database().write(lambda conn: store.delete_deployment(conn, name))
        self._forget(name)
        if gone is None:
            raise _no_deployment(name)
        return gone

    def shadow_counts(self, name: str) -> tuple[int, int]:
        """Shadow runs and shadow failures recorded for a deployment in this process."""
        tracked = self._deployments
        return tracked.shadow_runs.get(name, 0), tracked.shadow_failures.get(name, 0)

    def _database(self) -> Database:
        if self._db is None:
            raise Unavailable("deployments need the inference module's database", retry_after=60)
        return self._db

    def _forget(self, name: str) -> None:
        self._deployments.known.pop(name, None)
        self._deployments.caches.pop(name, None)

    async def _check_deployment(self, deployment: Deployment) -> None:
        name = validate_name(deployment.name)
        for ref in _check_spec(deployment):
            await self._registry.get_version(GetVersion(ref=ref))  # NotFound if it does not resolve
        try:
            await self._registry.get_model(GetModel(name=name))
        except NotFound:
            return
        raise Conflict(
            f"{name!r} is a model name: models and deployments share one namespace",
            details={"name": name},
        )

    async def _deployment(self, name: str) -> Deployment | None:
        if self._db is None:
            return None
        known = self._deployments.known.get(name)
        if known is not None and time.monotonic() - known[1] < DEPLOYMENT_TTL_S:
            return known[0]
        found = await self._db.read(lambda conn: store.get_deployment(conn, name))
        self._deployments.known[name] = (found, time.monotonic())
        return found

    async def _predict_deployment(self, deployment: Deployment, request: Predict) -> Prediction:
        route = _pick(deployment, request)
        key = await self._resolve(route.model)
        digest = _digest(request) if deployment.cache_ttl_s > 0 else None
        if digest is not None:
            hit = self._cached(deployment.name, (key, digest))
            if hit is not None:
                return msgspec.structs.replace(hit, prediction_id=uuid.uuid4().hex, cached=True)
        for shadow in deployment.shadows:
            self._shadow(deployment.name, shadow, request)
        try:
            answer = await self._primary(deployment, route.model, request)
        except FALLIBLE as exc:
            answer = await self._fall_back(deployment, request, exc)
            return msgspec.structs.replace(answer, deployment=deployment.name)
        answer = msgspec.structs.replace(answer, deployment=deployment.name)
        if digest is not None:
            self._remember(deployment, (key, digest), answer)
        return answer

    async def _primary(self, deployment: Deployment, ref: str, request: Predict) -> Prediction:
        if not deployment.fallbacks:
            return await self._predict_model(ref, request)
        current = context.current()
        budget = context.remaining() * PRIMARY_SHARE
        with context.use(current.with_timeout(budget)):
            try:
                return await asyncio.wait_for(self._predict_model(ref, request), budget)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"deployment {deployment.name}: route {ref} missed its deadline"
                ) from None

    async def _fall_back(
        self, deployment: Deployment, request: Predict, error: QuarryError
    ) -> Prediction:
        self._log.warning(
            "deployment %s: primary failed (%s), trying fallbacks", deployment.name, error.message
        )
        for fallback in deployment.fallbacks:
            if fallback.kind == "default":
                return _default_answer(deployment, fallback, request)
            assert fallback.model is not None
            try:
                answer = await self._predict_model(fallback.model, request)
            except FALLIBLE as exc:
                self._log.warning(
                    "deployment %s: fallback %s failed: %s",
                    deployment.name,
                    fallback.model,
                    exc.message,
                )
                continue
            return msgspec.structs.replace(answer, fallback=f"model:{fallback.model}")
        raise error

    def _shadow(self, name: str, ref: str, request: Predict) -> None:
        tracked = self._deployments

        async def run() -> None:
            try:
                answer = await self._predict_model(ref, request)
            except Exception as exc:  # a shadow never affects the answer
                tracked.shadow_failures[name] = tracked.shadow_failures.get(name, 0) + 1
                self._log.warning("deployment %s: shadow %s failed: %s", name, ref, exc)
                return
            tracked.shadow_runs[name] = tracked.shadow_runs.get(name, 0) + 1
            self._log.info(
                "deployment %s: shadow %s:%s answered %s",
                name,
                answer.model,
                answer.version,
                answer.prediction_id,
            )

        task = asyncio.ensure_future(run())
        tracked.shadow_tasks.add(task)
        task.add_done_callback(tracked.shadow_tasks.discard)

    def _cached(self, name: str, key: tuple[Key, str]) -> Prediction | None:
        cache = self._deployments.caches.get(name)
        entry = cache.get(key) if cache is not None else None
        if cache is None or entry is None:
            return None
        expires, answer = entry
        if expires < time.monotonic():
            del cache[key]
            return None
        cache.move_to_end(key)
        self._deployments.cache_hits[name] = self._deployments.cache_hits.get(name, 0) + 1
        return answer

    def _remember(self, deployment: Deployment, key: tuple[Key, str], answer: Prediction) -> None:
        cache = self._deployments.caches.setdefault(deployment.name, OrderedDict())
        cache[key] = (time.monotonic() + deployment.cache_ttl_s, answer)
        cache.move_to_end(key)
        while len(cache) > deployment.cache_max_entries:
            cache.popitem(last=False)

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
        """Stop every batcher (and shadow traffic still in flight)."""
        for task in list(self._deployments.shadow_tasks):
            task.cancel()
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


def _no_deployment(name: str) -> NotFound:
    return NotFound(f"no deployment {name!r}", details={"deployment": name})


def _encode_cursor(name: str) -> str:
    return msgspec.json.encode(["d", name]).hex()


def _decode_cursor(cursor: str) -> str:
    try:
        key = msgspec.json.decode(bytes.fromhex(cursor))
    except (ValueError, msgspec.DecodeError):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and key[0] == "d" and isinstance(key[1], str)):
        raise InvalidInput(
            "invalid cursor: pass the next_cursor of the previous page unchanged",
            details={"field": "cursor"},
        )
    return key[1]


def _check_spec(deployment: Deployment) -> list[str]:
    """Check what needs no registry; answers the references that must resolve."""
    if not deployment.routes:
        raise InvalidInput("a deployment needs at least one route", details={"field": "routes"})
    for route in deployment.routes:
        if not (math.isfinite(route.weight) and route.weight > 0):
            raise InvalidInput(
                f"route {route.model!r}: weight must be a positive number",
                details={"field": "routes", "model": route.model},
            )
    refs = [r.model for r in deployment.routes] + list(deployment.shadows)
    refs += _fallback_refs(deployment.fallbacks)
    for field_name in ("sticky_header", "sticky_input"):
        if getattr(deployment, field_name) == "":
            raise InvalidInput(f"{field_name} must not be empty", details={"field": field_name})
    if not (math.isfinite(deployment.cache_ttl_s) and deployment.cache_ttl_s >= 0):
        raise InvalidInput("cache_ttl_s must be 0 or more", details={"field": "cache_ttl_s"})
    if deployment.cache_max_entries < 1:
        raise InvalidInput(
            "cache_max_entries must be at least 1", details={"field": "cache_max_entries"}
        )
    for ref in refs:
        ModelRef.parse(ref)
    return refs


def _fallback_refs(fallbacks: list[Fallback]) -> list[str]:
    refs = []
    for fallback in fallbacks:
        if fallback.kind == "model" and not fallback.model:
            raise InvalidInput("a model fallback needs a model", details={"field": "fallbacks"})
        if fallback.kind == "default" and not fallback.outputs:
            raise InvalidInput("a default fallback needs outputs", details={"field": "fallbacks"})
        if fallback.model:
            refs.append(fallback.model)
    return refs


def _sticky_key(deployment: Deployment, request: Predict) -> str | None:
    if deployment.sticky_header and request.sticky_key is not None:
        return request.sticky_key
    if deployment.sticky_input and deployment.sticky_input in request.inputs:
        array = request.inputs[deployment.sticky_input].to_numpy()
        if array.size == 0:
            return None
        first = array.reshape(len(array), -1)[0] if array.ndim else array.reshape(1)
        return repr(first.tolist())
    return request.sticky_key


def _pick(deployment: Deployment, request: Predict) -> Route:
    routes = deployment.routes
    if len(routes) == 1:
        return routes[0]
    weights = [r.weight for r in routes]
    sticky = _sticky_key(deployment, request)
    if sticky is None:
        return random.choices(routes, weights=weights)[0]
    digest = hashlib.sha256(f"{deployment.name}\0{sticky}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64 * sum(weights)
    for route in routes:
        point -= route.weight
        if point < 0:
            return route
    return routes[-1]


def _digest(request: Predict) -> str:
    hasher = hashlib.sha256()
    hasher.update(msgspec.json.encode([sorted(request.outputs), request.coerce]))
    for name in sorted(request.inputs):
        tensor = request.inputs[name]
        hasher.update(msgspec.json.encode([name, tensor.dtype, list(tensor.shape)]))
        hasher.update(hashlib.sha256(tensor.data).digest())
    return hasher.hexdigest()


def _default_answer(deployment: Deployment, fallback: Fallback, request: Predict) -> Prediction:
    outputs = fallback.outputs
    if request.outputs:
        outputs = {k: v for k, v in outputs.items() if k in request.outputs}
    return Prediction(
        model=deployment.name,
        version=0,
        outputs=outputs,
        prediction_id=uuid.uuid4().hex,
        fallback="default",
    )


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
