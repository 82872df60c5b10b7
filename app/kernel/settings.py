"""Settings: environment (``QUARRY_*``), then ``quarry.toml``, then defaults; CLI flags beat all.

Every value is validated when loaded; a bad one raises :class:`ConfigError` naming the variable and
the values it accepts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

import msgspec

__all__ = [
    "HTTP_SERVERS",
    "ConfigError",
    "Settings",
    "http_server_for",
    "load_settings",
    "parse_workers",
    "usable_cores",
]

S = TypeVar("S", bound=msgspec.Struct)

_MiB = 1 << 20

HTTP_SERVERS = ("auto", "granian", "uvicorn")
"""The values of ``QUARRY_HTTP_SERVER``; the first is the default (see :func:`http_server_for`)."""


class ConfigError(ValueError):
    """Bad configuration; the message names the variable and what it accepts."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """A process's validated configuration."""

    data_dir: Path = Path(".quarry")
    """QUARRY_DATA_DIR: where embedded databases, artifacts and the keys file live."""
    modules: tuple[str, ...] | None = None
    """QUARRY_MODULES: the modules this process hosts (``all``, i.e. ``None``; a comma-separated
    list, checked against the build by the composition root; or ``none``, i.e. ``()``: a gateway
    that hosts no module and serves the remote ones' routes)."""
    remotes: Mapping[str, str] = field(default_factory=dict)
    """QUARRY_REMOTE_<M>: base URL of the process hosting module M."""
    database_urls: Mapping[str, str] = field(default_factory=dict)
    """QUARRY_<M>_DATABASE_URL: module M's database (default ``sqlite:///<data_dir>/<m>.db``)."""
    broker_url: str = "memory://"
    """QUARRY_BROKER_URL: ``memory://`` (in-process workers) or ``redis://...``."""
    events_url: str = "memory://"
    """QUARRY_EVENTS_URL: ``memory://`` (in-process delivery) or ``redis://...``."""
    redis_prefix: str = "quarry:"
    """QUARRY_REDIS_PREFIX: prefix of every Redis key, stream and queue Quarry creates."""
    artifacts_url: str | None = None
    """QUARRY_ARTIFACTS_URL: a folder (default ``<data_dir>/artifacts``) or ``s3://bucket/prefix``."""
    auth: Literal["auto", "on", "off"] = "auto"
    """QUARRY_AUTH: ``auto`` requires API keys unless the server binds to a loopback address."""
    api_keys_file: Path | None = None
    """QUARRY_API_KEYS_FILE: hashed API keys (default ``<data_dir>/api_keys.toml``)."""
    service_token: str | None = None
    """QUARRY_SERVICE_TOKEN: the shared secret modules present to each other over RPC."""
    host: str = "127.0.0.1"
    """QUARRY_HOST: the address ``quarry serve`` binds."""
    port: int = 8000
    """QUARRY_PORT: the port ``quarry serve`` binds."""
    workers: int = 1
    """QUARRY_WORKERS: server processes ``quarry serve`` runs on its one port (``auto``: one per
    CPU core this process may use)."""
    http_server: str = HTTP_SERVERS[0]
    """QUARRY_HTTP_SERVER: what serves HTTP in ``quarry serve``: ``granian`` (HTTP parsed in Rust,
    on a thread of its own), ``uvicorn`` (HTTP parsed on the event loop), or ``auto``: granian
    while the workers leave a core free for its threads, else uvicorn (:func:`http_server_for`)."""
    max_body_bytes: int = 32 * _MiB
    """QUARRY_MAX_BODY_BYTES: largest public request body (413 above it)."""
    max_tensor_bytes: int = 1 << 30
    """QUARRY_MAX_TENSOR_BYTES: most bytes a model input or output may take by its static
    dimensions alone (dynamic ones count as 1); the registry refuses larger ones at upload."""
    max_rpc_body_bytes: int = 256 * _MiB
    """QUARRY_MAX_RPC_BODY_BYTES: largest RPC request body."""
    rate_limit_per_s: float = 1000.0
    """QUARRY_RATE_LIMIT_PER_S: sustained requests per second per API key (0 = no limit)."""
    rate_limit_burst: int = 2000
    """QUARRY_RATE_LIMIT_BURST: requests a key may send at once above the sustained rate."""
    rate_limit_url: str | None = None
    """QUARRY_RATE_LIMIT_URL: where the buckets live: ``memory://`` (per process) or ``redis://...``
    (shared by every replica). Default: QUARRY_EVENTS_URL when that is Redis, else per process."""
    locks_url: str | None = None
    """QUARRY_LOCKS_URL: ``redis://...`` to hold singleton-loop leases in Redis. Default: each
    module's database (a PostgreSQL advisory lock; a file lock beside a SQLite file)."""
    open_probes: bool = True
    """QUARRY_OPEN_PROBES: ``/healthz``, ``/readyz`` and ``/v2/health/*`` need no key."""
    metrics_auth: Literal["auto", "on", "off"] = "auto"
    """QUARRY_METRICS_AUTH: ``/metrics`` needs a key with scope ``read`` (or the service token);
    ``auto`` follows QUARRY_AUTH (off on a loopback address). Replaces QUARRY_OPEN_METRICS."""
    metrics_max_series: int = 1000
    """QUARRY_METRICS_MAX_SERIES: label sets per metric; later ones share an overflow series."""
    events_max_attempts: int = 5
    """QUARRY_EVENTS_MAX_ATTEMPTS: deliveries tried per subscriber before an event is failed."""
    events_retry_base_s: float = 1.0
    """QUARRY_EVENTS_RETRY_BASE_S: first retry delay; doubles per attempt (with jitter)."""
    events_poll_s: float = 1.0
    """QUARRY_EVENTS_POLL_S: how often the relay looks for due work it was not told about."""
    events_retention_s: float = 7 * 86400.0
    """QUARRY_EVENTS_RETENTION_S: completed events are pruned after this long."""
    events_stream_maxlen: int = 100_000
    """QUARRY_EVENTS_STREAM_MAXLEN: entries kept per Redis event stream (approximately)."""
    events_claim_idle_s: float = 60.0
    """QUARRY_EVENTS_CLAIM_IDLE_S: an unacknowledged event is reclaimed after this long."""
    task_worker_threads: int = 2
    """QUARRY_TASK_WORKER_THREADS: in-process task workers (``memory://`` broker)."""
    log_level: str = "INFO"
    """QUARRY_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """QUARRY_LOG_FORMAT: ``json`` (structured), ``console`` (for people), or ``auto``: console
    when stderr is a terminal, json otherwise."""

    module_settings: Mapping[type, Any] = field(default_factory=dict)
    """Each module's own settings, by their Struct type: :func:`configure_modules` loads them
    (:mod:`app.kernel.module_settings`); tests give theirs with :meth:`with_module`."""
    module_environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The ``QUARRY_*`` variables :func:`load_settings` saw, which module settings are read from."""
    module_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    """The ``[<module>]`` tables of ``quarry.toml``, checked when module settings are loaded."""

    def with_module(self, *configs: Any) -> Settings:
        """A copy with module settings ``configs`` (Structs such as ``InferenceSettings(...)``),
        which win over the environment and ``quarry.toml``; checked against their bounds."""
        given = {type(c): c for c in configs}
        for kind, config in given.items():
            if not isinstance(config, msgspec.Struct):
                raise TypeError(f"module settings are msgspec Structs, not {kind.__name__}")
            try:  # a Struct's constructor does not check its fields' bounds: converting does
                msgspec.convert(msgspec.to_builtins(config), kind)
            except msgspec.ValidationError as exc:
                raise ConfigError(f"{kind.__name__}: {exc}") from None
        return dataclasses.replace(self, module_settings={**self.module_settings, **given})

    def module_config(self, kind: type[S]) -> S:
        """The module settings of type ``kind`` in effect (its defaults when none were loaded)."""
        found = self.module_settings.get(kind)
        return found if isinstance(found, kind) else kind()

    def database_url(self, module: str) -> str:
        """Module ``module``'s database URL."""
        return self.database_urls.get(module) or f"sqlite:///{self.data_dir / module}.db"

    @property
    def keys_file(self) -> Path:
        """The API keys file in effect."""
        return self.api_keys_file or self.data_dir / "api_keys.toml"

    @property
    def artifacts_location(self) -> str:
        """The artifact store in effect."""
        return self.artifacts_url or str(self.data_dir / "artifacts")

    @property
    def rate_limit_store(self) -> str:
        """Where the rate-limit buckets live in effect (``memory://`` or a Redis URL)."""
        if self.rate_limit_url:
            return self.rate_limit_url
        return self.events_url if self.events_url.startswith("redis") else "memory://"

    def hosts(self, module: str) -> bool:
        """Whether this process builds ``module`` (a module with a remote URL never is)."""
        hosted = self.modules is None or module in self.modules
        return hosted and module not in self.remotes

    def auth_required(self, host: str | None = None) -> bool:
        """Whether requests need keys when serving on ``host`` (``auto`` decides by it)."""
        if self.auth != "auto":
            return self.auth == "on"
        return not _is_loopback(host or self.host)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated like any other source."""
        return _build({f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | changes)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


# --- parsing --------------------------------------------------------------------------------


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _modules(value: str) -> tuple[str, ...] | None:
    names = [m.strip().lower() for m in value.split(",") if m.strip()]
    if not names:
        raise ValueError("expected 'all', 'none' or a comma-separated list of modules")
    if len(names) > 1 and {"all", "none"} & set(names):
        raise ValueError("'all' and 'none' stand alone, not in a list of modules")
    if names == ["none"]:
        return ()  # a gateway: hosts nothing, serves every remote module's routes
    return None if names == ["all"] else tuple(dict.fromkeys(names))


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _positive(kind: Callable[[str], Any], *, allow_zero: bool = False) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        number = kind(value)
        if number < 0 or (number == 0 and not allow_zero):
            raise ValueError("expected a positive number" + (" or 0" if allow_zero else ""))
        return number

    return parse


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if urlparse(value).scheme not in schemes:
            raise ValueError(f"expected a URL with scheme {' or '.join(schemes)}")
        return value

    return parse


def _http_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("expected an http(s):// URL such as http://host:8001")
    return value.rstrip("/")


def _db_url(value: str) -> str:
    if urlparse(value).scheme.split("+")[0] not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("expected a sqlite:/// or postgresql:// URL")
    return value


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def http_server_for(choice: str, workers: int, cores: int | None = None) -> str:
    """The server ``QUARRY_HTTP_SERVER=choice`` means for ``workers`` processes on ``cores``.

    ``auto`` is granian while there are fewer workers than cores: each granian worker parses HTTP
    on a Rust thread beside its event loop, which a spare core runs for free (one worker answered
    more requests per second than on uvicorn). Once the workers fill every core, that thread
    competes with the event loops, and uvicorn, all on the one thread, answered more
    (``bench.serving_baselines``; the README's Choices)."""
    if choice != "auto":
        return choice
    return "granian" if workers < (usable_cores() if cores is None else cores) else "uvicorn"


def parse_workers(value: str) -> int:
    """A count of server processes: a positive whole number, or ``auto`` (the CPU cores this
    process may run on)."""
    if value.strip().lower() == "auto":
        return usable_cores()
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError("expected a whole number of at least 1, or auto")
    return count


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


_PARSERS: dict[str, Callable[[str], Any]] = {
    "data_dir": Path,
    "modules": _modules,
    "broker_url": _url("memory", "redis", "rediss"),
    "events_url": _url("memory", "redis", "rediss"),
    "redis_prefix": str,
    "artifacts_url": str,
    "auth": _choice("auto", "on", "off"),
    "api_keys_file": Path,
    "service_token": str,
    "host": str,
    "port": _positive(int),
    "workers": parse_workers,
    "http_server": _choice(*HTTP_SERVERS),
    "max_body_bytes": _positive(int),
    "max_tensor_bytes": _positive(int),
    "max_rpc_body_bytes": _positive(int),
    "rate_limit_per_s": _positive(float, allow_zero=True),
    "rate_limit_burst": _positive(int),
    "rate_limit_url": _url("memory", "redis", "rediss"),
    "locks_url": _url("redis", "rediss"),
    "open_probes": _bool,
    "metrics_auth": _choice("auto", "on", "off"),
    "metrics_max_series": _positive(int),
    "events_max_attempts": _positive(int),
    "events_retry_base_s": _positive(float, allow_zero=True),
    "events_poll_s": _positive(float),
    "events_retention_s": _positive(float),
    "events_stream_maxlen": _positive(int),
    "events_claim_idle_s": _positive(float),
    "task_worker_threads": _positive(int),
    "log_level": _log_level,
    "log_format": _choice("auto", "json", "console"),
}


def _variable(name: str) -> str:
    return f"QUARRY_{name.upper()}"


def _parse(name: str, raw: Any, source: str) -> Any:
    if name == "modules" and isinstance(raw, (tuple, list)):
        return _modules(",".join(map(str, raw))) if raw else ()  # () hosts nothing
    if raw is None or not isinstance(raw, (str, int, float, bool, Path, tuple, list)):
        return raw
    text = ",".join(map(str, raw)) if isinstance(raw, (tuple, list)) else str(raw)
    try:
        return _PARSERS[name](text)
    except ValueError as exc:
        raise ConfigError(f"{source}={text!r} is not valid: {exc}") from None


def _build(values: Mapping[str, Any]) -> Settings:
    parsed = {k: _parse(k, v, _variable(k)) if k in _PARSERS else v for k, v in values.items()}
    for mapping, check in (("remotes", _http_url), ("database_urls", _db_url)):
        for module, url in dict(parsed.get(mapping, {})).items():
            var = (
                f"QUARRY_REMOTE_{module.upper()}"
                if mapping == "remotes"
                else (f"QUARRY_{module.upper()}_DATABASE_URL")
            )
            try:
                parsed[mapping] = {**parsed[mapping], module: check(url)}
            except ValueError as exc:
                raise ConfigError(f"{var}={url!r} is not valid: {exc}") from None
    return Settings(**parsed)


_REMOTE = re.compile(r"QUARRY_REMOTE_([A-Z][A-Z0-9_]*)")
_DATABASE = re.compile(r"QUARRY_([A-Z][A-Z0-9_]*)_DATABASE_URL")


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    config_file: str | Path | None = None,
    **overrides: Any,
) -> Settings:
    """Load settings from ``environ`` (default ``os.environ``), a TOML file and ``overrides``.

    The TOML file is ``config_file``, else ``QUARRY_CONFIG``, else ``./quarry.toml`` if present;
    its keys are the setting names (``data_dir``, ``modules``, ...) plus tables ``[remote]`` and
    ``[database]`` keyed by module; any other table is a module's own (``[inference]``), kept in
    :attr:`Settings.module_tables` with the ``QUARRY_*`` variables for :func:`configure_modules`.
    ``overrides`` (CLI flags) win over everything.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = _from_toml(env, config_file)
    kernel = {f.name for f in dataclasses.fields(Settings)}
    tables = {
        k: values.pop(k) for k, v in list(values.items()) if k not in kernel and isinstance(v, dict)
    }
    if "QUARRY_OPEN_METRICS" in env or "open_metrics" in values:
        raise ConfigError("QUARRY_OPEN_METRICS was replaced by QUARRY_METRICS_AUTH (auto, on, off)")
    for name in _PARSERS:
        if _variable(name) in env:
            values[name] = env[_variable(name)]
    remotes = dict(tables.pop("remote", {}))
    databases = dict(tables.pop("database", {}))
    for variable, url in env.items():
        if url and (found := _REMOTE.fullmatch(variable)):
            remotes[found[1].lower()] = url
        elif url and (found := _DATABASE.fullmatch(variable)):
            databases[found[1].lower()] = url
    values |= {"remotes": remotes, "database_urls": databases, "module_tables": tables}
    values["module_environ"] = {k: v for k, v in env.items() if k.startswith("QUARRY_")}
    values |= {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(Settings)})
    if unknown:
        raise ConfigError(f"unknown setting(s) in quarry.toml: {', '.join(unknown)}")
    return _build(values)


def _from_toml(env: Mapping[str, str], config_file: str | Path | None) -> dict[str, Any]:
    path = Path(config_file or env.get("QUARRY_CONFIG") or "quarry.toml")
    if not path.exists():
        if config_file or env.get("QUARRY_CONFIG"):
            raise ConfigError(f"QUARRY_CONFIG: file {str(path)!r} does not exist")
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"QUARRY_CONFIG: cannot read {str(path)!r}: {exc}") from None
