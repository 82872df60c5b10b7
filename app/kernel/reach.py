"""Start-up reachability: each Redis and PostgreSQL server a process is configured to use, tried
once before any work, so an unreachable one is one readable line instead of a traceback.

:func:`check_reachable` raises :class:`Unreachable`, whose message names the server kind, its
address without credentials and the setting that points at it, e.g. ``cannot reach Redis at
redis://127.0.0.1:6390/0 (QUARRY_BROKER_URL): connection refused``. Once running, servers that
come and go are watched by :mod:`app.kernel.dependencies` instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "PROBE_TIMEOUT_S",
    "Dependency",
    "Unreachable",
    "causes",
    "check_reachable",
    "database_dependency",
    "redact_url",
    "short_reason",
]

PROBE_TIMEOUT_S = 5.0
"""How long one server may take to answer at start-up."""

_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "secret", "token", "sslpassword"})
_KINDS = {"redis": "Redis", "rediss": "Redis", "postgres": "PostgreSQL", "postgresql": "PostgreSQL"}


@dataclass(frozen=True)
class Dependency:
    """A server this process needs: the setting that names it, and its URL."""

    setting: str
    """The environment variable, e.g. ``QUARRY_BROKER_URL``."""
    url: str

    @property
    def kind(self) -> str | None:
        """``Redis`` or ``PostgreSQL``; ``None`` when there is nothing to reach (``memory://``,
        SQLite)."""
        return _KINDS.get(self.url.split(":", 1)[0].split("+", 1)[0].lower())


class Unreachable(Exception):
    """A server could not be reached at start-up; the message is the whole story, on one line."""

    def __init__(self, kind: str, url: str, settings: Iterable[str], reason: str) -> None:
        self.kind = kind
        self.url = redact_url(url)
        self.settings = tuple(settings)
        self.reason = reason
        super().__init__(
            f"cannot reach {kind} at {self.url} ({', '.join(self.settings)}): {reason}"
        )


def database_dependency(module: str, url: str) -> Dependency:
    """Module ``module``'s database, named by ``QUARRY_<M>_DATABASE_URL``."""
    return Dependency(f"QUARRY_{module.upper()}_DATABASE_URL", url)


def check_reachable(
    dependencies: Iterable[Dependency], *, timeout_s: float = PROBE_TIMEOUT_S
) -> None:
    """Try every distinct Redis and PostgreSQL server once, at the same time, within
    ``timeout_s``; raise :class:`Unreachable` for the first one (in the order given) that fails.

    A URL named by several settings is tried once, and the message names them all.
    """
    by_url: dict[str, list[str]] = {}
    for dep in dependencies:
        if dep.kind is not None:
            by_url.setdefault(dep.url, []).append(dep.setting)
    if not by_url:
        return
    with ThreadPoolExecutor(max_workers=len(by_url), thread_name_prefix="quarry-reach") as pool:
        failures = list(pool.map(lambda url: _try(url, timeout_s), by_url))
    for (url, settings), failure in zip(by_url.items(), failures, strict=True):
        if failure is not None:
            kind = Dependency(settings[0], url).kind or "server"
            raise Unreachable(kind, url, settings, short_reason(failure)) from failure


def _try(url: str, timeout_s: float) -> Exception | None:
    try:
        if url.startswith("redis"):
            _ping_redis(url, timeout_s)
        else:
            _connect_postgresql(url, timeout_s)
    except Exception as exc:  # whatever the driver raises, the server is not usable
        return exc
    return None


def _ping_redis(url: str, timeout_s: float) -> None:
    import redis  # lazily: only processes configured for Redis need it
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    finally:
        client.close()


def _connect_postgresql(url: str, timeout_s: float) -> None:
    import psycopg

    scheme, rest = url.split(":", 1)
    conninfo = "postgresql:" + rest if "+" in scheme else url  # SQLAlchemy's postgresql+psycopg
    with psycopg.connect(conninfo, connect_timeout=max(1, round(timeout_s))):
        pass


def redact_url(url: str) -> str:
    """``url`` without its password (in the user part or the query), for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, v) for k, v in pairs if k.lower() not in _SECRET_PARAMS])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what caused it, down to the root: the first exception of a group, else the
    explicit cause, else the context it was raised in (unless suppressed)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup) and current.exceptions:
            current = current.exceptions[0]
        elif current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None


def short_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few lower-case words (``connection refused``, ``timed
    out``, ``database "x" does not exist``): an operating-system error's text when there is one,
    else the first meaningful line of the driver's message."""
    for cause in causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return _lower_first(cause.strerror)
    root = list(causes(exc))[-1]
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    line = next((ln for ln in lines if "failed: " in ln), lines[0] if lines else "")
    if "failed: " in line:
        line = line.rsplit("failed: ", 1)[1]
    line = re.sub(r"^(FATAL|ERROR):\s*", "", re.sub(r"\[Errno -?\d+\]\s*", "", line))
    return _lower_first(line.strip()) or type(root).__name__


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
