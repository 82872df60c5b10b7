"""Model loading: which versions are served, loading or failed (references are resolved by
:mod:`~app.modules.inference.resolver`; this module takes versions).

A version that fails to load or warm up (a model ONNX Runtime refuses, one that cannot run, a
hash mismatch, memory that runs out) is *failed*: its status says why, and predictions answer
503 ``model_load_failed`` with ``Retry-After`` at once, without loading it again. The next use
after a backoff (:data:`RETRY_FIRST_S`, doubling per consecutive failure up to
:data:`RETRY_MAX_S`) tries again, and an explicit load (``POST .../load``) tries at once; a
successful load, or unloading the version, clears the failed state. Failures to reach the
registry are not the model's: they answer as they are and the next use tries again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.kernel.settings import Settings
from app.modules.inference.artifact_cache import cache_for
from app.modules.inference.batching import Batcher
from app.modules.inference.runtime import LoadedModel, ModelCache, load_model, select_providers
from app.modules.inference.settings import InferenceSettings
from contracts.common import IntegrityError, ModelLoadFailed, QuarryError
from contracts.inference import ModelStatus
from contracts.registry import (
    FetchArtifact,
    GetVersion,
    RegistryService,
    VersionInfo,
    read_artifact,
)

__all__ = ["RETRY_FIRST_S", "RETRY_MAX_S", "Key", "Loader", "Served"]

Key = tuple[str, int]
RETRY_FIRST_S = 30.0
"""How long a failed load stands before the next use tries again; doubles per failure."""
RETRY_MAX_S = 600.0
"""The longest a failed load stands before the next use tries again."""
_MAX_REASON = 500


@dataclass
class Served:
    """A loaded version and the batcher in front of it."""

    model: LoadedModel
    batcher: Batcher

    @property
    def size(self) -> int:
        """The artifact's bytes, which the loaded models' bounds count."""
        return self.model.size


@dataclass
class _Failure:
    reason: str
    failures: int
    retry_at: float
    """``time.monotonic()`` after which the next use loads again."""
    retry_at_utc: datetime

    def error(self, key: Key) -> ModelLoadFailed:
        name, version = key
        return ModelLoadFailed(
            f"model {name}:{version} failed to load: {self.reason}",
            retry_after=max(1.0, self.retry_at - time.monotonic()),
            details={"model": name, "version": version, "failures": self.failures},
        )


@dataclass
class _Loads:
    tasks: dict[Key, asyncio.Task[Served]] = field(default_factory=dict)
    failed: dict[Key, _Failure] = field(default_factory=dict)


class Loader:
    """Loads and warms versions once, keeps them in one bounded registry, reports their state."""

    def __init__(
        self, *, registry: RegistryService, settings: Settings, logger: logging.Logger
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._config = config = settings.module_config(InferenceSettings)
        self._log = logger
        self._providers = select_providers(config.providers)
        self._models: ModelCache[Served] = ModelCache(
            max_models=config.max_loaded_models, max_bytes=config.max_loaded_bytes
        )
        """Every served version with its batcher: the one registry of loaded models."""
        self._artifacts = cache_for(settings, logger)
        self._loads = _Loads()

    async def check_exists(self, key: Key) -> None:
        """Raise ``NotFound`` unless the registry has version ``key`` (off the predict path)."""
        await self._registry.get_version(GetVersion(ref=f"{key[0]}:{key[1]}"))

    def is_served(self, key: Key) -> bool:
        return key in self._models

    def may_load(self, key: Key) -> bool:
        """Whether a use may start loading ``key``: not failed, or its backoff has passed."""
        failure = self._loads.failed.get(key)
        return failure is None or time.monotonic() >= failure.retry_at

    async def follow(self, old: Key, new: Key) -> None:
        """A reference moves from ``old`` to ``new``: load and warm ``new`` first when ``old``
        is served, so that its traffic never waits for a load."""
        if old in self._models and new not in self._models:
            await self.load(new)

    # --- loading ----------------------------------------------------------------------------

    async def serving(self, key: Key) -> Served:
        """Version ``key`` ready to run, loading it on first use."""
        served = self._models.get(key)  # marks it recently used
        if served is not None:
            return served
        failure = self._loads.failed.get(key)
        if failure is not None and key not in self._loads.tasks and not self.may_load(key):
            raise failure.error(key)
        return await asyncio.shield(self.load(key))

    def load(self, key: Key) -> asyncio.Task[Served]:
        task = self._loads.tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load_now(key))
            self._loads.tasks[key] = task
            task.add_done_callback(functools.partial(self._loaded, key))
        return task

    def _loaded(self, key: Key, task: asyncio.Task[Served]) -> None:
        self._loads.tasks.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure is the version's status, not a lost error

    async def _load_now(self, key: Key) -> Served:
        name, version = key
        info = await self._registry.get_version(GetVersion(ref=f"{name}:{version}"))
        try:
            data = await self._artifact(info)
        except IntegrityError as exc:
            raise self._failed(key, exc) from None
        try:
            model = await self._build(info, data)
        except Exception as exc:  # whatever the model does, it becomes its failed state
            raise self._failed(key, exc) from None
        served = Served(model=model, batcher=self._batcher(model))
        self._loads.failed.pop(key, None)
        for _, gone in self._models.add(key, served):
            await gone.batcher.close()
        self._log.info("model %s:%s ready on %s", name, version, ",".join(model.providers))
        return served

    def _failed(self, key: Key, exc: Exception) -> ModelLoadFailed:
        earlier = self._loads.failed.get(key)
        failures = 1 if earlier is None else earlier.failures + 1
        backoff = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(failures - 1, 16))
        failure = _Failure(
            reason=_reason(exc),
            failures=failures,
            retry_at=time.monotonic() + backoff,
            retry_at_utc=datetime.now(UTC) + timedelta(seconds=backoff),
        )
        self._loads.failed[key] = failure
        self._log.error(
            "model %s:%s failed to load (failure %d, next try on use in %.0f s): %s",
            *key,
            failures,
            backoff,
            failure.reason,
        )
        return failure.error(key)

    async def _artifact(self, info: VersionInfo) -> bytes:
        """The version's bytes: from this host's cache when there, else through the registry."""
        cache = self._artifacts
        if cache is not None:
            data = await asyncio.to_thread(cache.read, info.sha256)
            if data is not None:
                return data
        chunks = self._registry.fetch_artifact(FetchArtifact(ref=f"{info.name}:{info.version}"))
        first, data = await read_artifact(chunks)  # verified against first.sha256
        if cache is not None and first.sha256 == info.sha256:
            await asyncio.to_thread(cache.write, info.sha256, data)
        return data

    async def _build(self, info: VersionInfo, data: bytes) -> LoadedModel:
        model = await asyncio.to_thread(
            load_model,
            info.name,
            info.version,
            data,
            info.signature,
            providers=self._providers,
            intra_op_threads=self._config.threads,
            sha256=info.sha256,
        )
        model.lineage = info.lineage
        model.classes = list(info.classes)
        await asyncio.to_thread(
            model.warm_up,
            min(2, self._config.max_batch_size),
            max_bytes=self._settings.max_tensor_bytes,
        )
        return model

    def _batcher(self, model: LoadedModel) -> Batcher:
        return Batcher(
            model,
            max_batch_size=self._config.max_batch_size,
            max_queue_delay_ms=self._config.max_queue_delay_ms,
            max_queue_rows=self._config.max_queue_rows,
            runners=self._config.runners,
            inline_max_s=self._config.inline_max_us / 1e6,
        )

    async def unload(self, key: Key) -> None:
        served = self._models.remove(key)
        self._loads.failed.pop(key, None)
        if served is not None:
            await served.batcher.close()

    async def close(self) -> None:
        """Stop every batcher."""
        for key, served in self._models.items():
            self._models.remove(key)
            await served.batcher.close()

    # --- state ------------------------------------------------------------------------------

    def status(self, key: Key) -> ModelStatus:
        name, version = key
        served = self._models.peek(key)
        if served is not None:
            signature = served.model.signature
            return ModelStatus(
                model=name,
                version=version,
                state="ready",
                inputs=signature.inputs,
                outputs=signature.outputs,
                providers=list(served.model.providers),
                classes=served.model.classes,
            )
        if key in self._loads.tasks:
            return ModelStatus(model=name, version=version, state="loading")
        failure = self._loads.failed.get(key)
        if failure is not None:
            return ModelStatus(
                model=name,
                version=version,
                state="failed",
                error=failure.reason,
                retry_at=failure.retry_at_utc,
            )
        return ModelStatus(model=name, version=version, state="unloaded")


def _reason(exc: Exception) -> str:
    """Why a load failed, in one line: the error's message, or the exception's type and text."""
    if isinstance(exc, QuarryError):
        text = exc.message
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
