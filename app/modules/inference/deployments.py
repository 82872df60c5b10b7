"""Deployments: storage, routing by weight or sticky key, shadows, fallbacks and cached answers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from app.kernel import context
from app.kernel.cursors import decode_cursor, encode_cursor
from app.kernel.ids import unique_id
from app.modules.inference import store
from app.modules.inference._cache import ResponseCache, digest
from app.modules.inference._deployment_spec import check_spec
from app.modules.inference.loading import Key
from contracts.common import (
    Conflict,
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    ModelLoadFailed,
    NotFound,
    Page,
    QuarryError,
    Unavailable,
    validate_name,
)
from contracts.inference import Deployment, Fallback, Predict, Prediction, Route
from contracts.registry import GetModel, GetVersion, RegistryService

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from app.kernel.db import Database

__all__ = ["DEPLOYMENT_TTL_S", "FALLIBLE", "MAX_LIST", "PRIMARY_SHARE", "ROUTED", "Deployments"]

DEPLOYMENT_TTL_S = 2.0
"""How long a deployment read from the database is trusted (other processes may change it)."""
PRIMARY_SHARE = 0.8
"""With fallbacks, the share of the call's remaining time the primary route may use."""
MAX_LIST = 500
FALLIBLE = (Unavailable, ModelLoadFailed, DeadlineExceeded, InternalError)
"""Failures of the primary that fallbacks answer for (input errors are the caller's)."""

PredictModel = Callable[[str, Predict], Awaitable[Prediction]]
"""Answers a request from one model reference (no deployment lookup)."""
Resolve = Callable[[str], Awaitable[Key]]
Refresh = Callable[[str], Awaitable[None]]
"""Re-resolves the references to one model (its aliases and bare name) at once."""

ROUTED: ContextVar[tuple[str, Key] | None] = ContextVar("routed", default=None)
"""The deployment and version a deployment request was routed to, so that a failure after the
route was picked is recorded against that version (the service resets it per prediction)."""


@dataclass
class _Shadows:
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Deployments:
    """The deployments a service answers for, read from the database and briefly trusted."""

    def __init__(
        self,
        *,
        registry: RegistryService,
        db: Database | None,
        logger: logging.Logger,
        predict_model: PredictModel,
        resolve: Resolve,
        refresh: Refresh | None = None,
    ) -> None:
        self._registry = registry
        self._db = db
        self._log = logger
        self._predict_model = predict_model
        self._resolve = resolve
        self._refresh = refresh
        self._known: dict[str, tuple[Deployment | None, float]] = {}
        self._cache = ResponseCache()
        self._shadows = _Shadows()

    # --- storage ----------------------------------------------------------------------------

    async def put(self, deployment: Deployment) -> Deployment:
        await self._check(deployment)
        now = datetime.now(UTC)
        stored = await self._database().write(
            lambda conn: store.put_deployment(conn, deployment, now)
        )
        self._forget(deployment.name)
        return stored

    async def put_if(self, deployment: Deployment, condition: Callable[[Connection], bool]) -> bool:
        """Store ``deployment`` in one transaction with ``condition``, only if it answers True
        (a rollout's step: its state and the routes it sets change together)."""
        await self._check(deployment)
        now = datetime.now(UTC)

        def write(conn: Connection) -> bool:
            if not condition(conn):
                return False
            store.put_deployment(conn, deployment, now)
            return True

        done = await self._database().write(write)
        self._forget(deployment.name)
        return done

    async def get(self, name: str) -> Deployment:
        name = validate_name(name)
        found = await self._database().read(lambda conn: store.get_deployment(conn, name))
        if found is None:
            raise _no_deployment(name)
        return found

    async def page(self, limit: int, cursor: str | None) -> Page[Deployment]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
            raise InvalidInput(
                f"invalid limit {limit!r}: expected 1 to {MAX_LIST}",
                details={"field": "limit", "max": MAX_LIST},
            )
        after = decode_cursor(cursor, "deployment", str)[0] if cursor else None
        items = await self._database().read(
            lambda conn: store.page_deployments(conn, after=after, limit=limit)
        )
        more = len(items) > limit
        items = items[:limit]
        return Page(
            items=items, next_cursor=encode_cursor("deployment", items[-1].name) if more else None
        )

    async def delete(self, name: str) -> Deployment:
        name = validate_name(name)
        gone = await self._database().write(lambda conn: store.delete_deployment(conn, name))
        self._forget(name)
        if gone is None:
            raise _no_deployment(name)
        return gone

    async def find(self, name: str) -> Deployment | None:
        """The deployment called ``name``, or None (always None without a database)."""
        if self._db is None:
            return None
        known = self._known.get(name)
        if known is not None and time.monotonic() - known[1] < DEPLOYMENT_TTL_S:
            return known[0]
        found = await self._db.read(lambda conn: store.get_deployment(conn, name))
        self._known[name] = (found, time.monotonic())
        return found

    async def alias_moved(self, model: str) -> None:
        """An alias of ``model`` moved (or its bare name may resolve elsewhere): routes that
        name it (``model@alias``, a bare ``model``) resolve again, the new version warmed
        before traffic moves, and cached answers of every deployment are dropped."""
        if self._refresh is not None:
            await self._refresh(model)
        self._known.clear()
        self._cache.caches.clear()

    def shadow_counts(self, name: str) -> tuple[int, int]:
        return self._shadows.runs.get(name, 0), self._shadows.failures.get(name, 0)

    def close(self) -> None:
        """Cancel shadow traffic still in flight."""
        for task in list(self._shadows.tasks):
            task.cancel()

    def _database(self) -> Database:
        if self._db is None:
            raise Unavailable("deployments need the inference module's database", retry_after=60)
        return self._db

    def _forget(self, name: str) -> None:
        self._known.pop(name, None)
        self._cache.drop(name)

    async def _check(self, deployment: Deployment) -> None:
        name = validate_name(deployment.name)
        for ref in check_spec(deployment):
            await self._registry.get_version(GetVersion(ref=ref))  # NotFound if it does not resolve
        try:
            await self._registry.get_model(GetModel(name=name))
        except NotFound:
            return
        raise Conflict(
            f"{name!r} is a model name: models and deployments share one namespace",
            details={"name": name},
        )

    # --- answering --------------------------------------------------------------------------

    async def predict(self, deployment: Deployment, request: Predict) -> Prediction:
        route = _pick(deployment, request)
        key = await self._resolve(route.model)
        ROUTED.set((deployment.name, key))
        hashed = digest(request) if deployment.cache_ttl_s > 0 else None
        if hashed is not None:
            hit = self._cache.get(deployment.name, (key, hashed))
            if hit is not None:
                return msgspec.structs.replace(hit, prediction_id=unique_id(), cached=True)
        for shadow in deployment.shadows:
            self._shadow(deployment.name, shadow, request)
        try:
            answer = await self._primary(deployment, route.model, request)
        except FALLIBLE as exc:
            answer = await self._fall_back(deployment, request, exc)
            return msgspec.structs.replace(answer, deployment=deployment.name)
        answer = msgspec.structs.replace(answer, deployment=deployment.name)
        if hashed is not None:
            self._cache.put(deployment, (key, hashed), answer)
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
        tracked = self._shadows

        async def run() -> None:
            try:
                answer = await self._predict_model(ref, request)
            except Exception as exc:  # a shadow never affects the answer
                tracked.failures[name] = tracked.failures.get(name, 0) + 1
                self._log.warning("deployment %s: shadow %s failed: %s", name, ref, exc)
                return
            tracked.runs[name] = tracked.runs.get(name, 0) + 1
            self._log.info(
                "deployment %s: shadow %s:%s answered %s",
                name,
                answer.model,
                answer.version,
                answer.prediction_id,
            )

        task = asyncio.ensure_future(run())
        tracked.tasks.add(task)
        task.add_done_callback(tracked.tasks.discard)


def _no_deployment(name: str) -> NotFound:
    return NotFound(f"no deployment {name!r}", details={"deployment": name})


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
    hashed = hashlib.sha256(f"{deployment.name}\0{sticky}".encode()).digest()
    point = int.from_bytes(hashed[:8], "big") / 2**64 * sum(weights)
    for route in routes:
        point -= route.weight
        if point < 0:
            return route
    return routes[-1]


def _default_answer(deployment: Deployment, fallback: Fallback, request: Predict) -> Prediction:
    outputs = fallback.outputs
    if request.outputs:
        outputs = {k: v for k, v in outputs.items() if k in request.outputs}
    return Prediction(
        model=deployment.name,
        version=0,
        outputs=outputs,
        prediction_id=unique_id(),
        fallback="default",
    )
