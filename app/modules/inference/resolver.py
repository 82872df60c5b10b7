"""What a name means: a deployment, or the model version a reference resolves to.

One cache answers it for every caller (predictions, deployment routes, fallbacks, shadows, model
status and loads, batch jobs). ``name:N`` always means version N; ``name@alias`` is trusted for
:data:`REF_TTL_S` unless an event says the alias moved; a bare ``name`` is the deployment
``name`` if one exists, else the model's ``champion`` alias, else its highest version, trusted
for :data:`DEPLOYMENT_TTL_S` (another process may create or change a deployment). A deployment
changed in this process is forgotten at once.

Concurrent misses share each read: when an entry expires under load, the requests that find it
expired wait for one deployment read and one registry lookup instead of each making their own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from app.modules.inference import store
from contracts.common import ModelRef, QuarryError
from contracts.inference import Deployment
from contracts.registry import GetVersion, RegistryService

if TYPE_CHECKING:
    from app.kernel.db import Database

__all__ = ["DEPLOYMENT_TTL_S", "MAX_ENTRIES", "REF_TTL_S", "Follow", "Key", "Resolver"]

Key = tuple[str, int]
"""A model version: ``(name, version)``."""
REF_TTL_S = 10.0
"""How long a resolved alias is trusted without an event saying it moved."""
DEPLOYMENT_TTL_S = 2.0
"""How long what a bare name means is trusted (other processes may change deployments)."""
MAX_ENTRIES = 10_000
"""Names remembered at most; past that the cache starts again empty."""

T = TypeVar("T")

Follow = Callable[[Key, Key], Awaitable[None]]
"""Called before a reference moves from one version to another (warms the new one if the old
one is served, so that traffic never waits for a load)."""


@dataclass(slots=True)
class _Entry:
    deployment: Deployment | None
    key: Key | None
    expires: float


class Resolver:
    """Answers what a reference means, from one bounded cache; see the module docstring."""

    def __init__(
        self,
        *,
        registry: RegistryService,
        db: Database | None,
        logger: logging.Logger,
        follow: Follow | None = None,
    ) -> None:
        self._registry = registry
        self._db = db
        self._log = logger
        self._follow = follow
        self._entries: dict[str, _Entry] = {}
        self._lookups: dict[tuple[str, str], asyncio.Future[Any]] = {}

    async def target(self, text: str) -> Deployment | Key:
        """The deployment ``text`` names, else the model version it resolves to."""
        entry = self._entries.get(text)
        if entry is not None and entry.expires > time.monotonic():
            found = entry.deployment or entry.key
            assert found is not None  # an entry holds one or the other
            return found
        ref = ModelRef.parse(text)
        if ref.version is not None:
            return self._fixed(text, ref)
        if ref.alias is None:
            found = await self.deployment(text)
            if found is not None:
                return found
        return await self._resolve(text, ref)

    async def version(self, text: str) -> Key:
        """The model version ``text`` resolves to (a deployment's name is not a model's)."""
        entry = self._entries.get(text)
        if entry is not None and entry.key is not None and entry.expires > time.monotonic():
            return entry.key
        ref = ModelRef.parse(text)
        if ref.version is not None:
            return self._fixed(text, ref)
        if entry is not None and entry.deployment is not None:
            return await self._lookup(text)  # NotFound: deployments and models share names
        return await self._resolve(text, ref)

    async def deployment(self, name: str) -> Deployment | None:
        """The deployment called ``name``, or None (always None without a database)."""
        entry = self._entries.get(name)
        if entry is not None and entry.expires > time.monotonic():
            return entry.deployment
        if self._db is None:
            return None
        db = self._db
        found: Deployment | None = await self._shared(
            ("deployment", name), lambda: db.read(lambda conn: store.get_deployment(conn, name))
        )
        if found is not None:
            self._remember(name, found, None, DEPLOYMENT_TTL_S)
        return found

    def forget(self, name: str) -> None:
        """A deployment called ``name`` changed in this process: ask again next time."""
        self._entries.pop(name, None)

    async def refresh(self, model: str) -> None:
        """Resolve every reference to ``model`` again (an alias moved or a version came),
        following each to its new version before the entry moves; deployments are read again."""
        for text, entry in list(self._entries.items()):
            if entry.deployment is not None:
                self._entries.pop(text, None)
                continue
            if entry.key is None or entry.expires == math.inf:
                continue
            if ModelRef.parse(text).name != model:
                continue
            try:
                key = await self._lookup(text)
                if self._follow is not None and key != entry.key:
                    await self._follow(entry.key, key)
            except QuarryError as exc:
                self._log.warning("could not follow %s: %s", text, exc.message)
                self._entries.pop(text, None)
                continue
            self._remember(text, None, key, self._ttl(text))

    async def _resolve(self, text: str, ref: ModelRef) -> Key:
        key = await self._lookup(text)
        self._remember(text, None, key, self._ttl(text))
        return key

    def _fixed(self, text: str, ref: ModelRef) -> Key:
        assert ref.version is not None
        key = (ref.name, ref.version)
        self._remember(text, None, key, math.inf)
        return key

    def _ttl(self, text: str) -> float:
        return REF_TTL_S if "@" in text or self._db is None else DEPLOYMENT_TTL_S

    async def _lookup(self, text: str) -> Key:
        info = await self._shared(
            ("version", text), lambda: self._registry.get_version(GetVersion(ref=text))
        )
        return (info.name, info.version)

    async def _shared(self, key: tuple[str, str], ask: Callable[[], Awaitable[T]]) -> T:
        """``ask()``, or the answer of the same question already being asked."""
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(ask())
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda done: self._settled(key, done))
        # shielded: a caller that gives up does not cancel the lookup others wait for
        return await asyncio.shield(lookup)

    def _settled(self, key: tuple[str, str], lookup: asyncio.Future[Any]) -> None:
        if self._lookups.get(key) is lookup:
            del self._lookups[key]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: every waiter may have given up

    def _remember(
        self, text: str, deployment: Deployment | None, key: Key | None, ttl: float
    ) -> None:
        if len(self._entries) >= MAX_ENTRIES and text not in self._entries:
            self._entries.clear()
        self._entries[text] = _Entry(deployment, key, time.monotonic() + ttl)
