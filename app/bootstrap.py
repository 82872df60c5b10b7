"""The composition root: the only code that knows every module.

:class:`Platform` builds the modules this process hosts, in dependency order, binds every
contract they require to a local implementation (through the kernel's call wrapper), wires events
and tasks, and exposes the bound contracts. :func:`create_app` puts the HTTP API on top.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar

from app.console import OWN_AUTH_PATHS, console_routes
from app.kernel import calls, telemetry
from app.kernel.auth import KeyStore
from app.kernel.db import Database
from app.kernel.dependencies import DependencyMonitor
from app.kernel.events import (
    FailedDelivery,
    Outbox,
    StreamEventBus,
    event_type_name,
    list_failed,
    list_failed_inbox,
    make_event_bus,
)
from app.kernel.http.app import ModuleStatus, create_http_app
from app.kernel.http.auth import auth_guard, auth_middleware
from app.kernel.http.idempotency import IdempotencyMiddleware
from app.kernel.http.ratelimit import rate_limiter
from app.kernel.module import (
    BuiltModule,
    ModuleContext,
    ModuleSpec,
    unmet_requirement,
    unplaced,
)
from app.kernel.module_settings import configure_modules
from app.kernel.reach import Dependency, check_reachable, database_dependency
from app.kernel.rpc import RemoteModule, rpc_router
from app.kernel.settings import ConfigError, Settings
from app.kernel.tasks import make_task_queue
from app.modules import features, inference, monitoring, notifications, registry, training
from app.modules.features.settings import FeaturesSettings
from contracts.common import Unauthenticated, Unavailable

__all__ = [
    "AVAILABLE_MODULES",
    "Platform",
    "configure",
    "create_app",
    "dependencies",
    "remote_clients",
]

AVAILABLE_MODULES: tuple[ModuleSpec, ...] = (
    registry.module,
    features.module,
    monitoring.module,
    inference.module,
    training.module,
    notifications.module,
)
"""Every module of this build, in dependency order."""

_log = logging.getLogger("quarry.bootstrap")


class Platform:
    """The modules of one process, built and started."""

    def __init__(self, settings: Settings, *, extra_modules: Sequence[ModuleSpec] = ()) -> None:
        self.specs = {s.name: s for s in (*AVAILABLE_MODULES, *extra_modules)}
        self.settings = settings = configure(settings, self.specs.values())
        self.hosted = [
            spec
            for spec in self.specs.values()
            if settings.hosts(spec.name) or spec in extra_modules
        ]
        self.bus = make_event_bus(settings)
        self.tasks = make_task_queue(settings)
        self.databases: dict[str, Database] = {}
        self.built: dict[str, BuiltModule] = {}
        self.remotes = _remote_modules(settings, self.specs)
        _check_placement(settings, self.hosted, self.remotes)
        self.health = DependencyMonitor()
        """The servers this process uses, checked in the background (``/readyz``, ``/metrics``)."""
        self.health.add_settings(settings)
        self._probes: httpx.AsyncClient | None = None
        if not self.hosted:  # a gateway is ready when it reaches the modules it serves
            for name, remote in self.remotes.items():
                self.health.add(
                    f"{name}.remote", "quarry", self._remote_probe(remote.url), module=name
                )
        online = settings.module_config(FeaturesSettings).online_store_url
        if online and online.startswith("redis"):  # a module's own server, watched all the same
            self.health.add_redis("online_store", online, serving=True)
        _check_event_placement(settings, self.specs, self.hosted)
        self._started = False
        self.draining = False
        """Set on SIGTERM by ``quarry serve``: ``/readyz`` fails while requests finish."""

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has finished and :meth:`stop` has not been called since."""
        return self._started

    async def start(self) -> None:
        """Check that every server this process needs answers, then migrate, build and start
        every hosted module, then events and tasks. Starting a started platform does nothing.

        Raises :class:`~app.kernel.reach.Unreachable` naming the server and its setting when
        a Redis or PostgreSQL server does not answer, before any work.
        """
        if self._started:
            return
        telemetry.configure(log_level=self.settings.log_level, log_format=self.settings.log_format)
        await asyncio.to_thread(check_reachable, dependencies(self.settings, self.hosted))
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            for spec in self.hosted:
                await self._build(spec)
            self._wire_subscriptions()
            await self.bus.start()
            if self.tasks.in_process:
                self.tasks.start_workers()
            for built in self.built.values():
                for hook in built.on_startup:
                    await hook()
            await self.health.start()
        except BaseException:
            await self.stop()
            raise
        self._started = True
        _log.info("platform started", extra={"modules": [s.name for s in self.hosted]})

    async def stop(self) -> None:
        """Stop hooks, events, tasks and database pools, in reverse order of starting."""
        await self.health.stop()
        for built in reversed(list(self.built.values())):
            for hook in built.on_shutdown:
                try:
                    await hook()
                except Exception:
                    _log.exception("shutdown hook failed")
        await self.bus.stop()
        await asyncio.to_thread(self.tasks.stop)
        probes, self._probes = self._probes, None
        if probes is not None:
            await probes.aclose()
        for remote in self.remotes.values():
            await remote.aclose()
        for db in self.databases.values():
            db.dispose()
        self._started = False

    async def __aenter__(self) -> Platform:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def gateway(self) -> bool:
        """Whether this process hosts no module (``QUARRY_MODULES=none``) and only serves the
        remote ones' routes."""
        return not self.hosted

    def _remote_probe(self, url: str) -> Callable[[], Awaitable[None]]:
        """A health check of the process at ``url``: its ``/healthz`` answers 200."""
        headers = {"authorization": f"Bearer {self.settings.service_token}"}

        async def check() -> None:
            if self._probes is None:
                self._probes = httpx.AsyncClient(headers=headers)
            answer = await self._probes.get(f"{url}/healthz", timeout=self.health.timeout_s)
            answer.raise_for_status()

        return check

    # --- building ---------------------------------------------------------------------------

    async def _build(self, spec: ModuleSpec) -> None:
        db = Database(spec.name, self.settings.database_url(spec.name))
        self.databases[spec.name] = db
        self.health.add_database(spec.name, db)
        if spec.migrations:
            await asyncio.to_thread(db.migrate, spec.migrations)
        outbox = Outbox(spec.name, spec.publishes)
        if spec.publishes:
            self.bus.add_publisher(spec.name, db, outbox)
        if spec.subscribes and isinstance(self.bus, StreamEventBus):
            self.bus.add_subscriber(spec.name, db)
        ctx = ModuleContext(
            name=spec.name,
            settings=self.settings,
            config=self.settings.module_config(spec.settings) if spec.settings else None,
            db=db,
            outbox=outbox,
            tasks=self.tasks,
            logger=logging.getLogger(f"quarry.{spec.name}"),
            dependencies=self._dependencies(spec),
        )
        self.built[spec.name] = await spec.build(ctx)

    def _dependencies(self, spec: ModuleSpec) -> dict[type, Any]:
        bound: dict[type, Any] = {}
        for dep in spec.requires:
            if dep.module in self.built or dep.module in self.remotes:
                bound[dep.protocol] = self.client(dep.module, caller=spec.name)
            elif not dep.optional:
                raise ConfigError(
                    f"module {spec.name} requires {dep.module}, which is neither hosted here"
                    f" (QUARRY_MODULES) nor remote (set QUARRY_REMOTE_{dep.module.upper()})"
                )
            else:
                _log.warning(
                    "%s: optional dependency %s is not bound; features that need it answer 503",
                    spec.name,
                    dep.module,
                )
        return bound

    def _wire_subscriptions(self) -> None:
        if isinstance(self.bus, StreamEventBus):  # events may come from other processes
            for spec in self.specs.values():
                if spec.publishes:
                    self.bus.declare_publisher(spec.name, spec.publishes)
        for name, built in self.built.items():
            declared = {event_type_name(t) for t in self.specs[name].subscribes}
            for event_type, handler in built.subscriptions.items():
                if event_type_name(event_type) not in declared:
                    raise ConfigError(f"module {name} handles an event it does not declare")
                self.bus.subscribe(name, event_type, handler)

    # --- views ------------------------------------------------------------------------------

    def client(self, module: str, *, caller: str = "client") -> Any:
        """Module ``module``'s contract as seen by ``caller`` (through the call wrapper).

        The client may be made before the platform starts; calls made before then are refused.
        """
        provides = self.specs[module].provides
        if module in self.remotes:
            proxy = self.remotes[module].proxy()
            return calls.bind(provides, proxy, module=module, caller=caller, placement="remote")
        if module not in {s.name for s in self.hosted}:
            raise LookupError(f"module {module} is neither hosted here nor remote")
        # Requests built in Python by callers outside the platform (app.connect, the CLI, the
        # console) are checked as a decoded body would be; modules and routes (whose bodies are
        # decoded already) call straight through.
        checked = caller not in self.specs and caller != "http"
        started = _Started(self.built, module)
        return calls.bind(provides, started, module=module, caller=caller, checked=checked)

    @property
    def reachable(self) -> list[ModuleSpec]:
        """Every module this process can call: hosted here or remote, in dependency order."""
        return [s for s in self.specs.values() if s in self.hosted or s.name in self.remotes]

    def route_handlers(self) -> list[Any]:
        """Public and RPC routes of every module this process reaches, local or remote; the
        public routes of a module it does not reach answer 503 ``unavailable`` naming it."""
        handlers: list[Any] = []
        reachable = self.reachable
        for spec in self.specs.values():
            if spec not in reachable:
                stand_in = unplaced(spec.name)
                client = calls.bind(
                    spec.provides, stand_in, module=spec.name, caller="http", placement="unplaced"
                )
                handlers.extend(spec.routes(client, self.settings))
                continue
            client = self.client(spec.name, caller="http")
            handlers.extend(spec.routes(client, self.settings))
            handlers.append(
                rpc_router(spec.name, spec.provides, spec.contract_version, client, self.settings)
            )
        return handlers

    def readiness(self) -> dict[str, bool]:
        """Each hosted module and whether it is ready."""
        return {
            s.name: self._started and s.name in self.built and self.built[s.name].is_ready()
            for s in self.hosted
        }

    def module_statuses(self) -> list[ModuleStatus]:
        """The ``/v1/modules`` table."""
        ready = self.readiness()
        rows = []
        for spec in self.reachable:
            remote = self.remotes.get(spec.name)
            rows.append(
                ModuleStatus(
                    name=spec.name,
                    placement="remote" if remote else "local",
                    url=remote.url if remote else None,
                    contract_version="{}.{}".format(*spec.contract_version),
                    breaker=remote.breaker.state if remote else None,
                    ready=ready.get(spec.name),
                )
            )
        return rows

    async def failed_events(self, limit: int) -> list[FailedDelivery]:
        """The latest ``limit`` event deliveries to subscribers that used up their attempts, as
        this process's modules keep them (a publisher's deliveries in process, a subscriber's
        inbox on Redis Streams), the latest failure first."""

        def read() -> list[FailedDelivery]:
            found: list[FailedDelivery] = []
            for spec in self.hosted:
                db = self.databases.get(spec.name)
                if db is not None and spec.publishes:
                    found += list_failed(db, spec.name)
                if db is not None and spec.subscribes:
                    found += list_failed_inbox(db, spec.name)
            found.sort(key=lambda f: f.updated_at, reverse=True)
            return found[:limit]

        return await asyncio.to_thread(read)


class _Started:
    """Resolves a module's service when called, so clients can exist before the modules do."""

    def __init__(self, built: dict[str, BuiltModule], module: str) -> None:
        self._built = built
        self._module = module

    def __getattr__(self, method: str) -> Any:
        built, module = self._built, self._module
        if module in built:  # started: the service's own method, with no frame in between
            return getattr(built[module].service, method)

        def call(*args: Any) -> Any:
            if module not in built:
                raise Unavailable(f"module {module} has not started yet", retry_after=1)
            return getattr(built[module].service, method)(*args)

        return call


def configure(
    settings: Settings,
    specs: Iterable[ModuleSpec] = AVAILABLE_MODULES,
    *,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """``settings`` checked against the modules of this build (``specs``), with each module's own
    settings loaded and ``overrides`` (module -> setting -> value) applied over every source; a
    module name nothing answers to is a :class:`ConfigError` naming its variable."""
    by_name = {spec.name: spec.settings for spec in specs}
    return configure_modules(settings, by_name, overrides=overrides)


def _remote_modules(settings: Settings, specs: dict[str, ModuleSpec]) -> dict[str, RemoteModule]:
    remotes = {name: url for name, url in settings.remotes.items() if name in specs}
    if remotes and not settings.service_token:
        raise ConfigError(
            "QUARRY_SERVICE_TOKEN must be set when modules are remote"
            f" (QUARRY_REMOTE_{next(iter(remotes)).upper()} is set)"
        )
    return {
        name: RemoteModule(
            name,
            url,
            specs[name].provides,
            specs[name].contract_version,
            token=settings.service_token,
            max_frame_bytes=settings.max_rpc_body_bytes,
        )
        for name, url in remotes.items()
    }


def _check_placement(
    settings: Settings, hosted: list[ModuleSpec], remotes: Mapping[str, RemoteModule]
) -> None:
    """Refuse a placement that cannot work, before any work: a hosted module's required
    dependency neither hosted nor remote, or a gateway (no hosted module) that reaches none."""
    unmet = unmet_requirement(hosted, {s.name for s in hosted} | set(remotes))
    if unmet is not None:
        spec, dep = unmet
        raise ConfigError(
            f"module {spec.name} requires {dep.module}, which is neither hosted here"
            f" (QUARRY_MODULES) nor remote (set QUARRY_REMOTE_{dep.module.upper()})"
        )
    if not hosted and not remotes:
        hosts = "none" if settings.modules == () else ",".join(settings.modules or ("all",))
        raise ConfigError(
            f"QUARRY_MODULES={hosts!r} hosts no module and no QUARRY_REMOTE_<MODULE> is set:"
            " a gateway needs the URL of at least one module's process"
        )


def _check_event_placement(
    settings: Settings, specs: dict[str, ModuleSpec], hosted: list[ModuleSpec]
) -> None:
    """In-process events cannot reach another process: refuse to start rather than lose them."""
    if not settings.events_url.startswith("memory://"):
        return
    for publisher in hosted:
        published = {event_type_name(t) for t in publisher.publishes}
        for name in settings.remotes:
            subscriber = specs.get(name)
            if subscriber and published & {event_type_name(t) for t in subscriber.subscribes}:
                raise ConfigError(
                    f"module {publisher.name} publishes events that remote module {name}"
                    " subscribes to, but QUARRY_EVENTS_URL is memory://: set it to redis://..."
                )


def dependencies(settings: Settings, hosted: Iterable[ModuleSpec]) -> list[Dependency]:
    """The servers a process hosting ``hosted`` needs at start-up, with the settings naming them:
    each hosted module's database, the broker, the event streams, the lease store, and the online
    store when features are hosted."""
    names = [spec.name for spec in hosted]
    needed = [database_dependency(name, settings.database_url(name)) for name in names]
    needed += [
        Dependency("QUARRY_BROKER_URL", settings.broker_url),
        Dependency("QUARRY_EVENTS_URL", settings.events_url),
    ]
    if settings.locks_url:
        needed.append(Dependency("QUARRY_LOCKS_URL", settings.locks_url))
    online = settings.module_config(FeaturesSettings).online_store_url
    if online and features.module.name in names:
        needed.append(Dependency("QUARRY_ONLINE_STORE_URL", online))
    return needed


@asynccontextmanager
async def remote_clients(url: str, token: str | None) -> AsyncIterator[dict[str, Any]]:
    """Typed clients for every module the server at ``url`` reaches, over its RPC endpoint."""
    specs = {s.name: s for s in AVAILABLE_MODULES}
    names = await _served_modules(url.rstrip("/"), token) or list(specs)
    remotes = {
        name: RemoteModule(
            name, url, specs[name].provides, specs[name].contract_version, token=token
        )
        for name in names
        if name in specs
    }
    try:
        yield {
            name: calls.bind(
                specs[name].provides, r.proxy(), module=name, caller="client", placement="remote"
            )
            for name, r in remotes.items()
        }
    finally:
        for remote in remotes.values():
            await remote.aclose()


async def _served_modules(url: str, token: str | None) -> list[str]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(f"{url}/v1/modules", headers=headers)
    except httpx.TransportError as exc:
        raise Unavailable(f"cannot reach Quarry at {url}: {type(exc).__name__}") from None
    if answer.status_code == 401:
        raise Unauthenticated(f"{url} refused the key: {answer.json().get('error', '')}")
    if answer.status_code != 200:
        return []  # e.g. a key without the read scope: assume every module
    return [m["name"] for m in answer.json()["modules"]]


def create_app(platform: Platform, *, host: str | None = None) -> Litestar:
    """The HTTP API of ``platform`` served on ``host``; the app starts and stops the platform."""
    settings = platform.settings
    keys = KeyStore(settings.keys_file)
    limiter = rate_limiter(settings)
    console = console_routes(
        {s.name: platform.client(s.name, caller="console") for s in platform.reachable},
        platform,
        keys,
        auth_required=settings.auth_required(host),
        limiter=limiter,
    )
    return create_http_app(
        settings=settings,
        platform=platform,
        route_handlers=[*platform.route_handlers(), *console],
        middleware=[
            auth_middleware(
                settings, keys, host=host, limiter=limiter, own_auth_paths=OWN_AUTH_PATHS
            ),
            IdempotencyMiddleware(),
        ],
        guards=[auth_guard],
        on_startup=[platform.start],
        on_shutdown=[platform.stop, limiter.aclose],
        dependencies=platform.health,
    )
