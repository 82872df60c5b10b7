"""A module that only listens: it records registry events and fails while told to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from app.kernel.events import EventMeta
from app.kernel.module import BuiltModule, ModuleContext, ModuleSpec
from contracts.common import Scope, method
from contracts.registry import ModelVersionRegistered


class Ping(msgspec.Struct, frozen=True):
    """Nothing."""


class ListenerService(Protocol):
    @method(scope=Scope.READ)
    async def ping(self, request: Ping) -> Ping: ...


@dataclass
class Listener:
    """Counts deliveries by event id; raises while ``failing`` is set."""

    failing: bool = False
    calls: list[str] = field(default_factory=list)
    seen: list[ModelVersionRegistered] = field(default_factory=list)

    async def ping(self, request: Ping) -> Ping:
        return request

    async def on_registered(self, event: ModelVersionRegistered, meta: EventMeta) -> None:
        self.calls.append(meta.id)
        if self.failing:
            raise RuntimeError("listener is down")
        self.seen.append(event)


def listener_module(listener: Listener, name: str = "listener") -> ModuleSpec:
    async def build(_ctx: ModuleContext) -> BuiltModule:
        return BuiltModule(
            service=listener, subscriptions={ModelVersionRegistered: listener.on_registered}
        )

    def routes(_service: Any, _settings: Any) -> list[Any]:
        return []

    return ModuleSpec(
        name=name,
        provides=ListenerService,
        contract_version=(1, 0),
        build=build,
        routes=routes,
        subscribes=(ModelVersionRegistered,),
    )
