"""Finding models and versions in a transaction; ``NotFound`` messages say what is missing."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from app.modules.registry import store
from app.modules.registry.validation import is_reserved_alias
from contracts.common import ModelRef, NotFound
from contracts.registry import ModelInfo, VersionInfo

__all__ = ["CHAMPION", "locked_version", "no_model", "require_model", "resolve"]

CHAMPION = "champion"
"""The alias a bare model name resolves to when it is set."""


def resolve(conn: Connection, ref: ModelRef) -> VersionInfo:
    """The version ``ref`` names.

    ``name:N`` is version N (archived or not); ``name@alias`` the alias's target, where
    ``@latest`` is the highest live version and ``@v<N>`` version N; a bare name is the
    ``champion`` alias if set, else the highest live (not archived) version.
    """
    name = ref.name
    if ref.version is not None:
        number: int | None = ref.version
    elif ref.alias is not None and is_reserved_alias(ref.alias):
        lowered = ref.alias.lower()
        number = (
            store.highest_ready_version(conn, name) if lowered == "latest" else int(lowered[1:])
        )
    elif ref.alias is not None:
        number = store.get_alias(conn, name, ref.alias)
        if number is None:
            require_model(conn, name)
            raise no_alias(name, ref.alias)
    else:
        number = store.get_alias(conn, name, CHAMPION) or store.highest_ready_version(conn, name)
    if number is None:
        require_model(conn, name)
        raise NotFound(
            f"model {name!r} has no live version (every version is archived or deleted)",
            details={"model": name},
        )
    return found(store.get_version(conn, name, number), name, number)


def require_model(conn: Connection, name: str) -> ModelInfo:
    """The model, or ``NotFound``."""
    info = store.get_model(conn, name)
    if info is None:
        raise no_model(name)
    return info


def locked_version(conn: Connection, name: str, number: int) -> VersionInfo:
    """Lock the model for this transaction and answer one of its versions, or ``NotFound``."""
    if not store.lock_model(conn, name):
        raise no_model(name)
    return found(store.get_version(conn, name, number), name, number)


def found(info: VersionInfo | None, name: str, number: int) -> VersionInfo:
    """``info``, or ``NotFound`` naming the version when it is ``None``."""
    if info is None:
        raise NotFound(
            f"model {name!r} has no version {number}", details={"model": name, "version": number}
        )
    return info


def no_model(name: str) -> NotFound:
    """The error for a model that does not exist."""
    return NotFound(f"model {name!r} does not exist", details={"model": name})


def no_alias(name: str, alias: str) -> NotFound:
    """The error for an alias that is not set."""
    return NotFound(
        f"model {name!r} has no alias {alias!r}", details={"model": name, "alias": alias}
    )
