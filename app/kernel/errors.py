"""The one place where contract errors become HTTP statuses (and back), and where a driver's
connection failure becomes :class:`~contracts.common.Unavailable`.

:func:`unavailable_from` is applied by the call wrapper (:mod:`app.kernel.calls`) and the HTTP
error handler, so no module catches driver errors itself: a server that is down, restarting or
refusing connections is a 503 ``unavailable`` with ``Retry-After`` naming the dependency, not a
500. Integrity and programming errors are not mapped: they stay what they are.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from contracts.common import (
    Conflict,
    ContractVersionMismatch,
    DeadlineExceeded,
    IntegrityError,
    InternalError,
    InvalidInput,
    MethodNotAllowed,
    ModelLoadFailed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuarryError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnprocessableInput,
)

__all__ = [
    "STATUS_BY_ERROR",
    "DependencyFailure",
    "dependency_failure",
    "error_for_status",
    "error_headers",
    "status_for",
    "unavailable_from",
]

STATUS_BY_ERROR: dict[type[QuarryError], int] = {
    InvalidInput: 400,
    ContractVersionMismatch: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    MethodNotAllowed: 405,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnprocessableInput: 422,
    RateLimited: 429,
    InternalError: 500,
    IntegrityError: 502,
    Unavailable: 503,
    ModelLoadFailed: 503,
    DeadlineExceeded: 504,
}

_BY_STATUS: dict[int, type[QuarryError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    422: UnprocessableInput,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: DeadlineExceeded,
}


def status_for(error: QuarryError) -> int:
    """The HTTP status of ``error`` (its nearest mapped base class; 500 when none)."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_headers(error: QuarryError) -> dict[str, str]:
    """Extra headers an error answer carries (``Retry-After`` for 429 and 503)."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(float(retry_after))))}


def error_for_status(
    status: int, message: str, details: dict[str, Any] | None = None
) -> QuarryError:
    """The contract error for an HTTP status that carried no Quarry error body."""
    cls = _BY_STATUS.get(status, InternalError)
    return cls(message, details=details)


# --- driver failures -------------------------------------------------------------------------

_SQLITE_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
_PG_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")
"""SQLSTATEs of a lost or refused connection: class 08, admin/crash shutdown, cannot connect now."""
_CHAIN_DEPTH = 4


@dataclass(frozen=True)
class DependencyFailure:
    """A driver error that means a dependency is unreachable or overloaded, not a bug."""

    kind: str
    """The engine: ``postgresql``, ``sqlite``, ``database`` (unknown dialect), ``redis``, ``s3``."""
    connection: bool
    """Whether the connection itself failed (the server is down or unreachable), as opposed to
    an overload the server reported (a full pool, a locked SQLite file, a serialization retry)."""


def dependency_failure(exc: BaseException) -> DependencyFailure | None:
    """What ``exc`` (or an exception it was raised from) says about a dependency, if anything.

    Drivers are looked up in ``sys.modules`` only: an exception of a driver never imported
    cannot exist, so this imports nothing.
    """
    seen: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if seen is None:
            return None
        found = _sqlalchemy(seen) or _psycopg(seen) or _redis(seen) or _botocore(seen)
        if found is not None:
            return found
        seen = seen.__cause__ or seen.__context__
    return None


def refused_value(exc: BaseException) -> InvalidInput | None:
    """``invalid_input`` for a value the database refuses to store or compare (a DBAPI
    ``DataError``: a NUL character in text, a number out of a column's range), else ``None``.

    Bounds are checked before any query (the contracts' bounded types); this catches what a
    schema cannot say, such as PostgreSQL's refusal of NUL in text, as a 400 rather than a 500.
    """
    sqlalchemy_exc = _loaded("sqlalchemy.exc")
    if sqlalchemy_exc is None or not isinstance(exc, sqlalchemy_exc.DataError):
        return None
    return InvalidInput(
        "the database refused a value of this request (for example a NUL character in text)",
        details={"cause": type(getattr(exc, "orig", exc)).__name__},
    )


def unavailable_from(exc: BaseException, *, module: str | None = None) -> Unavailable | None:
    """The ``unavailable`` error for a driver failure (``None`` when ``exc`` is not one).

    A connection failure also tells the running dependency monitors, which mark the dependency
    down at once and check it again (:func:`app.kernel.dependencies.report_failure`). The
    message and details name the engine and the module, never a URL or its credentials.
    """
    failure = dependency_failure(exc)
    if failure is None:
        return None
    if failure.connection:
        from app.kernel.dependencies import report_failure  # it imports metrics: on first use

        report_failure(failure.kind, module)
    where = f" to {module}" if module else ""
    what = "unreachable" if failure.connection else "overloaded"
    details: dict[str, Any] = {"dependency": failure.kind}
    if module:
        details["module"] = module
    return Unavailable(
        f"{failure.kind} is {what}{where} ({type(exc).__name__})",
        retry_after=1.0,
        details=details,
    )


def _loaded(name: str) -> Any:
    return sys.modules.get(name)


def _sqlalchemy(exc: BaseException) -> DependencyFailure | None:
    sa_exc = _loaded("sqlalchemy.exc")
    if sa_exc is None or not isinstance(exc, sa_exc.SQLAlchemyError):
        return None
    if isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        # a dropped connection, or a connection pool that stayed empty (an overload)
        return DependencyFailure("database", connection=isinstance(exc, sa_exc.DisconnectionError))
    if not isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return None
    orig = exc.orig
    if getattr(exc, "connection_invalidated", False) or orig is None:
        return DependencyFailure(_engine_of(orig), connection=True)
    if type(orig).__module__.startswith("sqlite3"):
        return _sqlite(orig)
    return _psycopg(orig)


def _engine_of(orig: BaseException | None) -> str:
    module = type(orig).__module__ if orig is not None else ""
    if module.startswith("psycopg"):
        return "postgresql"
    return "sqlite" if module.startswith("sqlite3") else "database"


def _sqlite(orig: BaseException) -> DependencyFailure | None:
    """SQLite has no server: only a file locked past the busy timeout is worth a retry."""
    code = getattr(orig, "sqlite_errorcode", None)
    locked = code in _SQLITE_BUSY if code is not None else "locked" in str(orig)
    return DependencyFailure("sqlite", connection=False) if locked else None


def _psycopg(exc: BaseException) -> DependencyFailure | None:
    psycopg = _loaded("psycopg")
    if psycopg is None or not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return None
    state = getattr(exc, "sqlstate", None)
    lost = (
        isinstance(exc, psycopg.InterfaceError)
        or state is None
        or state.startswith(_PG_CONNECTION_STATES)
    )
    return DependencyFailure("postgresql", connection=lost)


def _redis(exc: BaseException) -> DependencyFailure | None:
    redis_exc = _loaded("redis.exceptions")
    if redis_exc is not None and isinstance(
        exc, (redis_exc.ConnectionError, redis_exc.TimeoutError)
    ):  # BusyLoadingError (a restart reading its data) is a ConnectionError
        return DependencyFailure("redis", connection=True)
    dramatiq_errors = _loaded("dramatiq.errors")
    if dramatiq_errors is not None:
        # BrokerConnectionError since dramatiq 2; ConnectionError before (read without the
        # deprecation warning newer versions give for the old name)
        broken = vars(dramatiq_errors).get("BrokerConnectionError") or vars(dramatiq_errors).get(
            "ConnectionError"
        )
        if broken is not None and isinstance(exc, broken):
            return DependencyFailure("redis", connection=True)
    return None


def _botocore(exc: BaseException) -> DependencyFailure | None:
    boto = _loaded("botocore.exceptions")
    if boto is None:
        return None
    reached = (boto.ConnectionError, boto.ConnectionClosedError, boto.ReadTimeoutError)
    if isinstance(exc, reached):  # EndpointConnectionError and ConnectTimeoutError included
        return DependencyFailure("s3", connection=True)
    return None
