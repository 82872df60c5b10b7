"""Deployments: their storage, and the plan that answers a request through one.

A deployment only plans: :meth:`Deployments.plan` picks the route (by weight, or by sticky key),
resolves it, and answers a :class:`Plan` (the primary version, shadows, fallbacks, the response
cache key); the service runs the plan (:mod:`~app.modules.inference.running`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec

from app.kernel.cursors import decode_cursor, encode_cursor
from app.kernel.ids import ordered_id
from app.modules.inference import store
from app.modules.inference._cache import CacheKey, ResponseCache, digest
from app.modules.inference._deployment_spec import check_spec
from app.modules.inference.resolver import Key, Resolver
from contracts.common import (
    Conflict,
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    ModelLoadFailed,
    NotFound,
    Page,
    Unavailable,
    validate_name,
)
from contracts.inference import Deployment, Fallback, Predict, Prediction, Route
from contracts.registry import GetModel, GetVersion, RegistryService

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from app.kernel.db import Database

__all__ = ["FALLIBLE", "MAX_LIST", "PRIMARY_SHARE", "Deployments", "Plan", "default_answer"]

PRIMARY_SHARE = 0.8
"""With fallbacks, the share of the call's remaining time the primary route may use."""
MAX_LIST = 500
FALLIBLE = (Unavailable, ModelLoadFailed, DeadlineExceeded, InternalError)
"""Failures of the primary that fallbacks answer for (input errors are the caller's)."""


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """How to answer one request: run ``primary``; for a deployment, also copy the request to
    ``shadows``, answer from the response cache under ``cache_key`` when it holds one, and try
    ``fallbacks`` in order when the primary fails for a reason of its own (:data:`FALLIBLE`).

    A Struct (never encoded) because one is built per prediction and builds fast."""

    primary: Key
    """The version to run (a route's, or the one a model reference resolved to)."""
    deployment: Deployment | None = None
    """The deployment that routed the request; ``None`` for a model reference."""
    route: str = ""
    """The picked route's reference."""
    sticky: str | None = None
    """The sticky key that picked the route, if any."""
    shadows: tuple[str, ...] = ()
    fallbacks: tuple[Fallback, ...] = ()
    cache_key: CacheKey | None = None
    """Where the answer is cached (deployments with ``cache_ttl_s``)."""

    @property
    def budget_share(self) -> float:
        """The share of the call's remaining time the primary may use (all of it without
        fallbacks)."""
        return PRIMARY_SHARE if self.fallbacks else 1.0


class Deployments:
    """The deployments a service answers for (stored in the module's database) and their plans."""

    def __init__(
        self, *, registry: RegistryService, db: Database | None, resolver: Resolver
    ) -> None:
        self._registry = registry
        self._db = db
        self._resolver = resolver
        self.answers = ResponseCache()
        """Recent answers per deployment (those with ``cache_ttl_s``)."""

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

    async def alias_moved(self, model: str) -> None:
        """An alias of ``model`` moved (or its bare name may resolve elsewhere): references to
        it (``model@alias``, a bare ``model``, deployment routes) resolve again, the new version
        warmed before traffic moves, and cached answers of every deployment are dropped."""
        await self._resolver.refresh(model)
        self.answers.caches.clear()

    def _database(self) -> Database:
        if self._db is None:
            raise Unavailable("deployments need the inference module's database", retry_after=60)
        return self._db

    def _forget(self, name: str) -> None:
        self._resolver.forget(name)
        self.answers.drop(name)

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

    # --- planning ---------------------------------------------------------------------------

    async def plan(self, deployment: Deployment, request: Predict) -> Plan:
        """The plan that answers ``request`` through ``deployment``."""
        sticky = _sticky_key(deployment, request) if len(deployment.routes) > 1 else None
        route = _pick(deployment, sticky)
        key = await self._resolver.version(route.model)
        return Plan(
            primary=key,
            deployment=deployment,
            route=route.model,
            sticky=sticky,
            shadows=tuple(deployment.shadows),
            fallbacks=tuple(deployment.fallbacks),
            cache_key=(key, digest(request)) if deployment.cache_ttl_s > 0 else None,
        )


def _no_deployment(name: str) -> NotFound:
    return NotFound(f"no deployment {name!r}", details={"deployment": name})


def _sticky_key(deployment: Deployment, request: Predict) -> str | None:
    if deployment.sticky_header:
        if request.sticky_key is not None:
            return request.sticky_key
        value = request.sticky.get(deployment.sticky_header.lower())
        if value is not None:
            return value
    if deployment.sticky_input and deployment.sticky_input in request.inputs:
        array = request.inputs[deployment.sticky_input].to_numpy()
        if array.size == 0:
            return None
        first = array.reshape(len(array), -1)[0] if array.ndim else array.reshape(1)
        return repr(first.tolist())
    return request.sticky_key


def _pick(deployment: Deployment, sticky: str | None) -> Route:
    routes = deployment.routes
    if len(routes) == 1:
        return routes[0]
    weights = [r.weight for r in routes]
    if sticky is None:
        return random.choices(routes, weights=weights)[0]
    hashed = hashlib.sha256(f"{deployment.name}\0{sticky}".encode()).digest()
    point = int.from_bytes(hashed[:8], "big") / 2**64 * sum(weights)
    for route in routes:
        point -= route.weight
        if point < 0:
            return route
    return routes[-1]


def default_answer(deployment: Deployment, fallback: Fallback, request: Predict) -> Prediction:
    """A ``default`` fallback's answer: its outputs (those the request asked for)."""
    outputs = fallback.outputs
    if request.outputs:
        outputs = {k: v for k, v in outputs.items() if k in request.outputs}
    return Prediction(
        model=deployment.name,
        version=0,
        outputs=outputs,
        prediction_id=ordered_id(),
        fallback="default",
    )
