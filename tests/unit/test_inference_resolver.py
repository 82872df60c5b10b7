"""The resolver: one cache says what a reference means, and follows moved aliases."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from app.modules.inference.resolver import Key, Resolver
from contracts.common import NotFound
from contracts.registry import GetVersion


@dataclass
class FakeRegistry:
    """Answers ``get_version`` from a table of references, counting the questions."""

    refs: dict[str, Key] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def get_version(self, request: GetVersion) -> Any:
        self.asked.append(request.ref)
        if request.ref not in self.refs:
            raise NotFound(f"no {request.ref}")
        name, version = self.refs[request.ref]
        return SimpleNamespace(name=name, version=version)


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry({"m@prod": ("m", 1), "m": ("m", 2)})


@pytest.fixture
def followed() -> list[tuple[Key, Key]]:
    return []


@pytest.fixture
def resolver(registry: FakeRegistry, followed: list[tuple[Key, Key]]) -> Resolver:
    async def follow(old: Key, new: Key) -> None:
        followed.append((old, new))

    return Resolver(
        registry=registry,  # type: ignore[arg-type]
        db=None,
        logger=logging.getLogger("test"),
        follow=follow,
    )


async def test_a_version_needs_no_registry_and_names_are_asked_once(
    resolver: Resolver, registry: FakeRegistry
) -> None:
    assert await resolver.target("m:7") == ("m", 7)
    assert await resolver.version("m@prod") == ("m", 1)
    assert await resolver.target("m@prod") == ("m", 1)
    assert await resolver.target("m") == ("m", 2)  # no database: no deployment
    assert await resolver.deployment("m") is None

    assert registry.asked == ["m@prod", "m"]


async def test_a_moved_alias_is_followed_before_its_entry_moves(
    resolver: Resolver, registry: FakeRegistry, followed: list[tuple[Key, Key]]
) -> None:
    await resolver.version("m@prod")
    await resolver.version("other:1")
    registry.refs["m@prod"] = ("m", 3)

    await resolver.refresh("m")

    assert followed == [(("m", 1), ("m", 3))]
    assert await resolver.version("m@prod") == ("m", 3)


async def test_a_reference_that_no_longer_resolves_is_forgotten(
    resolver: Resolver, registry: FakeRegistry
) -> None:
    await resolver.version("m@prod")
    del registry.refs["m@prod"]

    await resolver.refresh("m")

    with pytest.raises(NotFound):
        await resolver.version("m@prod")


async def test_concurrent_misses_share_one_lookup_and_its_failure(
    resolver: Resolver, registry: FakeRegistry
) -> None:
    gate = asyncio.Event()
    asking = registry.get_version

    async def slow(request: GetVersion) -> Any:
        await gate.wait()
        return await asking(request)

    registry.get_version = slow  # type: ignore[method-assign]
    waiting = [asyncio.ensure_future(resolver.target("m@prod")) for _ in range(50)]
    missing = [asyncio.ensure_future(resolver.target("gone@prod")) for _ in range(3)]
    waiting[0].cancel()  # one caller giving up does not cancel the others' lookup
    await asyncio.sleep(0)
    gate.set()

    assert await asyncio.gather(*waiting[1:]) == [("m", 1)] * 49
    for call in missing:
        with pytest.raises(NotFound):
            await call
    assert registry.asked == ["m@prod", "gone@prod"]
