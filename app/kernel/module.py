"""What a module declares (:class:`ModuleSpec`) and gets when built (:class:`ModuleContext`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from contracts.common import Unavailable

if TYPE_CHECKING:
    import logging

    # PEP 747: a parameter typed ``TypeForm[P]`` takes a Protocol class and answers ``P``, where
    # ``type[P]`` would refuse it (mypy's type-abstract: only concrete classes are ``type[P]``).
    from typing_extensions import TypeForm

    from app.kernel.db import Database
    from app.kernel.events import EventHandler, Outbox
    from app.kernel.settings import Settings
    from app.kernel.tasks import TaskQueue

__all__ = [
    "BuiltModule",
    "Dependency",
    "ModuleContext",
    "ModuleSpec",
    "RouteFactory",
    "unmet_requirement",
    "unplaced",
]

P = TypeVar("P")

RouteFactory = Callable[[Any, "Settings"], Sequence[Any]]
"""Given the module's service (local or remote) and the settings, answer its route handlers."""


@dataclass(frozen=True, kw_only=True)
class Dependency:
    """A contract a module needs: provided by ``module``, typed by ``protocol``.

    An optional dependency left unbound disables what needs it (a start-up warning, and a clear
    503 when that feature is asked for); a required one is a start-up error.
    """

    module: str
    protocol: type
    optional: bool = False


@dataclass(frozen=True, kw_only=True)
class ModuleSpec:
    """Everything the composition root needs to know about a module.

    ``build`` runs once per process that hosts the module; ``routes`` runs in every process that
    serves the public API, with a local service or a remote proxy.
    """

    name: str
    provides: type
    contract_version: tuple[int, int]
    build: Callable[[ModuleContext], Awaitable[BuiltModule]]
    routes: RouteFactory
    requires: tuple[Dependency, ...] = ()
    publishes: tuple[type, ...] = ()
    subscribes: tuple[type, ...] = ()
    migrations: str | None = None
    """Folder name under the ``migrations`` package holding this module's alembic environment."""
    settings: type | None = None
    """The module's own settings: a frozen, ``kw_only`` msgspec Struct read from
    ``QUARRY_<NAME>_<FIELD>`` and the ``[<name>]`` table of ``quarry.toml``
    (:mod:`app.kernel.module_settings`); handed to ``build`` as :attr:`ModuleContext.config`."""


@dataclass(kw_only=True)
class BuiltModule:
    """A module built for this process: its service, event handlers and lifecycle hooks."""

    service: Any
    subscriptions: Mapping[type, EventHandler] = field(default_factory=dict)
    on_startup: Sequence[Callable[[], Awaitable[None]]] = ()
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = ()
    is_ready: Callable[[], bool] = lambda: True


@dataclass(kw_only=True)
class ModuleContext:
    """What ``ModuleSpec.build`` receives: this module's share of the process."""

    name: str
    settings: Settings
    db: Database
    outbox: Outbox
    tasks: TaskQueue
    logger: logging.Logger
    dependencies: Mapping[type, Any]
    config: Any = None
    """This module's own settings (an instance of ``ModuleSpec.settings``), or ``None``."""

    def require(self, protocol: TypeForm[P]) -> P:
        """The bound implementation (local or remote) of a required contract.

        ``protocol`` is the contract's Protocol class (``ctx.require(RegistryService)``).
        """
        key = cast(type, protocol)  # a Protocol class: the key ``dependencies`` is bound under
        try:
            return cast(P, self.dependencies[key])
        except KeyError:
            raise LookupError(f"{self.name} did not declare {key.__name__}") from None

    def optional(self, protocol: TypeForm[P]) -> P | None:
        """The bound implementation of an optional contract, or ``None`` when it is not bound."""
        return cast("P | None", self.dependencies.get(cast(type, protocol)))


def unbound(feature: str, variable: str) -> Unavailable:
    """The error a feature answers when the optional contract it needs is not bound."""
    return Unavailable(
        f"{feature} is not available: its module is neither hosted here nor configured"
        f" (set {variable})",
        retry_after=60,
    )


def unmet_requirement(
    hosted: Iterable[ModuleSpec], placed: Collection[str]
) -> tuple[ModuleSpec, Dependency] | None:
    """The first hosted module (in the order given) with a required dependency that is not among
    the ``placed`` modules (hosted here or remote), and that dependency; ``None`` when the
    placement satisfies the module graph. Optional dependencies never make a placement fail."""
    for spec in hosted:
        for dep in spec.requires:
            if not dep.optional and dep.module not in placed:
                return spec, dep
    return None


class _Unplaced:
    """Every method of a module that is neither hosted here nor remote: refused when called."""

    def __init__(self, module: str) -> None:
        self._module = module

    def __getattr__(self, method: str) -> Callable[..., Any]:
        module = self._module

        def call(*_args: Any) -> Any:
            raise Unavailable(
                f"module {module} is neither hosted here nor remote"
                f" (set QUARRY_REMOTE_{module.upper()} or add it to QUARRY_MODULES)",
                retry_after=60,
            )

        return call


def unplaced(module: str) -> Any:
    """A stand-in for ``module``'s service in a process that neither hosts nor reaches it: its
    public routes are still mounted, and each answers 503 ``unavailable`` naming the module
    (never a 404, which would tell a client the route does not exist)."""
    return _Unplaced(module)
