"""The registry's tables (its own MetaData, every name prefixed ``registry_``) and their queries.

Every query is a small function taking a :class:`~sqlalchemy.engine.Connection`; the caller owns
the transaction. Rows become contract Structs here, so nothing above this file sees a row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from contracts.registry import Lineage, ModelInfo, ReferenceProfile, Signature, VersionInfo

__all__ = [
    "ARCHIVED",
    "READY",
    "alias_history",
    "aliases",
    "aliases_of",
    "allocate_version",
    "count_references",
    "delete_alias",
    "delete_version",
    "ensure_model",
    "get_alias",
    "get_model",
    "get_reference_profile",
    "get_version",
    "highest_ready_version",
    "insert_reference_profile",
    "insert_version",
    "lock_digest",
    "lock_model",
    "metadata",
    "models",
    "page_models",
    "page_versions",
    "put_alias",
    "reference_profiles",
    "referenced_digests",
    "replace_reference_profile",
    "set_status",
    "set_task_and_classes",
    "update_model",
    "version_by_idempotency_key",
    "versions",
]

metadata = sa.MetaData()

models = sa.Table(
    "registry_models",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("next_version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

versions = sa.Table(
    "registry_versions",
    metadata,
    sa.Column(
        "model",
        sa.String(128),
        sa.ForeignKey("registry_models.name", name="fk_registry_versions_model"),
        primary_key=True,
    ),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("signature", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("task", sa.String(16), nullable=True),
    sa.Column("classes", sa.JSON, nullable=True),
    sa.UniqueConstraint("model", "idempotency_key", name="uq_registry_versions_idempotency_key"),
    sa.CheckConstraint("status IN ('ready', 'archived')", name="ck_registry_versions_status"),
)

aliases = sa.Table(
    "registry_aliases",
    metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("alias", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.ForeignKeyConstraint(
        ["model", "version"],
        ["registry_versions.model", "registry_versions.version"],
        name="fk_registry_aliases_version",
    ),
    sa.Index("ix_registry_aliases_version", "model", "version"),
)

reference_profiles = sa.Table(
    "registry_reference_profiles",
    metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("profile", sa.LargeBinary, nullable=False),
    sa.ForeignKeyConstraint(
        ["model", "version"],
        ["registry_versions.model", "registry_versions.version"],
        name="fk_registry_reference_profiles_version",
        ondelete="CASCADE",
    ),
)
"""One msgpack-encoded :class:`~contracts.registry.ReferenceProfile` per version that has one."""

alias_history = sa.Table(
    "registry_alias_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("alias", sa.String(128), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("previous_version", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_registry_alias_history_alias", "model", "alias", "id"),
)
"""Every move of an alias, oldest first by ``id`` (no foreign key: a version may go later)."""

READY: Final = "ready"
ARCHIVED: Final = "archived"

_PROFILE_ENCODER = msgspec.msgpack.Encoder()
_PROFILE_DECODER = msgspec.msgpack.Decoder(ReferenceProfile)


# --- locking and allocation -----------------------------------------------------------------


def lock_model(conn: Connection, name: str) -> bool:
    """Lock the model's row until the transaction ends; answer whether the model exists.

    SQLite needs no row lock: write transactions already hold the database's write lock.
    """
    query = sa.select(models.c.name).where(models.c.name == name).with_for_update()
    return conn.execute(query).first() is not None


def lock_digest(conn: Connection, digest: str) -> None:
    """Serialise transactions that add or drop references to one blob (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(b"registry:" + digest.encode()).digest()[:8], "big")
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key - (1 << 63))))


def ensure_model(conn: Connection, name: str, now: datetime) -> None:
    """Create the model's row unless it exists (safe under concurrent first registrations)."""
    values = {
        "name": name,
        "description": "",
        "tags": {},
        "next_version": 1,
        "created_at": now,
        "updated_at": now,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(models).values(values).on_conflict_do_nothing())


def allocate_version(conn: Connection, name: str, now: datetime) -> int:
    """The next version number of a model whose row this transaction has locked.

    Bumps the counter (numbers are never reused, even after deletions) and ``updated_at``.
    """
    number = conn.execute(
        sa.select(models.c.next_version).where(models.c.name == name)
    ).scalar_one()
    conn.execute(
        models.update().where(models.c.name == name).values(next_version=number + 1, updated_at=now)
    )
    return int(number)


# --- models ---------------------------------------------------------------------------------


def update_model(
    conn: Connection, name: str, now: datetime, *, description: str | None, tags: Any
) -> None:
    """Change a model's description and/or tags (``None`` leaves a field as it is)."""
    values: dict[str, Any] = {"updated_at": now}
    if description is not None:
        values["description"] = description
    if tags is not None:
        values["tags"] = tags
    conn.execute(models.update().where(models.c.name == name).values(values))


def get_model(conn: Connection, name: str) -> ModelInfo | None:
    """A model, or ``None``."""
    row = conn.execute(sa.select(models).where(models.c.name == name)).first()
    return _model_infos(conn, [row])[0] if row is not None else None


def page_models(
    conn: Connection, *, after: str | None, prefix: str | None, tags: dict[str, str], limit: int
) -> list[ModelInfo]:
    """Up to ``limit + 1`` models by name after ``after`` (the extra one says a page follows)."""

    def query(last: str | None, size: int) -> sa.Select[Any]:
        q = sa.select(models).order_by(models.c.name).limit(size)
        if last is not None:
            q = q.where(models.c.name > last)
        if prefix:
            q = q.where(sa.func.substr(models.c.name, 1, len(prefix)) == prefix)
        return q

    rows = _collect(conn, query, after, key=lambda r: r.name, keep=_tag_filter(tags), limit=limit)
    return _model_infos(conn, rows)


def _model_infos(conn: Connection, rows: Sequence[Row[Any]]) -> list[ModelInfo]:
    names = [r.name for r in rows]
    if not names:
        return []
    latest_ready = sa.func.max(sa.case((versions.c.status == READY, versions.c.version)))
    stats = {
        r.model: r
        for r in conn.execute(
            sa.select(
                versions.c.model,
                sa.func.count().label("version_count"),
                latest_ready.label("latest"),
            )
            .where(versions.c.model.in_(names))
            .group_by(versions.c.model)
        )
    }
    by_model: dict[str, dict[str, int]] = {name: {} for name in names}
    for a in conn.execute(sa.select(aliases).where(aliases.c.model.in_(names))):
        by_model[a.model][a.alias] = a.version
    infos = []
    for row in rows:
        stat = stats.get(row.name)
        infos.append(
            ModelInfo(
                name=row.name,
                description=row.description,
                tags=dict(row.tags),
                aliases=dict(sorted(by_model[row.name].items())),
                latest_version=stat.latest if stat is not None else None,
                version_count=stat.version_count if stat is not None else 0,
                created_at=_utc(row.created_at),
                updated_at=_utc(row.updated_at),
            )
        )
    return infos


# --- versions -------------------------------------------------------------------------------


def insert_version(conn: Connection, info: VersionInfo, idempotency_key: str | None) -> None:
    """Insert a new version row."""
    conn.execute(
        versions.insert().values(
            model=info.name,
            version=info.version,
            sha256=info.sha256,
            size=info.size,
            signature=msgspec.to_builtins(info.signature),
            status=info.status,
            description=info.description,
            tags=info.tags,
            metrics=info.metrics,
            params=info.params,
            lineage=msgspec.to_builtins(info.lineage),
            idempotency_key=idempotency_key,
            created_at=info.created_at,
            task=info.task,
            classes=info.classes or None,
        )
    )


def set_task_and_classes(
    conn: Connection, name: str, version: int, task: str | None, classes: list[str]
) -> None:
    """Change a version's task and classes (metadata: the model itself stays as it is)."""
    conn.execute(
        versions.update()
        .where(versions.c.model == name, versions.c.version == version)
        .values(task=task, classes=classes or None)
    )


def get_version(conn: Connection, name: str, version: int) -> VersionInfo | None:
    """One version with the aliases pointing at it, or ``None``."""
    row = conn.execute(
        sa.select(versions).where(versions.c.model == name, versions.c.version == version)
    ).first()
    return _version_infos(conn, name, [row])[0] if row is not None else None


def version_by_idempotency_key(conn: Connection, name: str, key: str) -> VersionInfo | None:
    """The version of ``name`` registered with idempotency key ``key``, or ``None``."""
    number = conn.execute(
        sa.select(versions.c.version).where(
            versions.c.model == name, versions.c.idempotency_key == key
        )
    ).scalar()
    return get_version(conn, name, number) if number is not None else None


def highest_ready_version(conn: Connection, name: str) -> int | None:
    """The highest version of ``name`` that is not archived."""
    return conn.execute(
        sa.select(sa.func.max(versions.c.version)).where(
            versions.c.model == name, versions.c.status == READY
        )
    ).scalar()


def page_versions(
    conn: Connection,
    name: str,
    *,
    before: int | None,
    include_archived: bool,
    tags: dict[str, str],
    limit: int,
) -> list[VersionInfo]:
    """Up to ``limit + 1`` versions of ``name``, newest first, below version ``before``."""

    def query(last: int | None, size: int) -> sa.Select[Any]:
        q = (
            sa.select(versions)
            .where(versions.c.model == name)
            .order_by(versions.c.version.desc())
            .limit(size)
        )
        if last is not None:
            q = q.where(versions.c.version < last)
        if not include_archived:
            q = q.where(versions.c.status == READY)
        return q

    rows = _collect(
        conn, query, before, key=lambda r: r.version, keep=_tag_filter(tags), limit=limit
    )
    return _version_infos(conn, name, rows)


def set_status(conn: Connection, name: str, version: int, status: str) -> None:
    """Archive or restore a version."""
    conn.execute(
        versions.update()
        .where(versions.c.model == name, versions.c.version == version)
        .values(status=status)
    )


def delete_version(conn: Connection, name: str, version: int) -> None:
    """Delete a version row and its reference profile (its aliases must be gone)."""
    profile = reference_profiles.c
    conn.execute(
        reference_profiles.delete().where(profile.model == name, profile.version == version)
    )
    conn.execute(versions.delete().where(versions.c.model == name, versions.c.version == version))


def count_references(conn: Connection, digest: str) -> int:
    """How many versions, of any model, hold the content ``digest``."""
    return int(
        conn.execute(
            sa.select(sa.func.count()).select_from(versions).where(versions.c.sha256 == digest)
        ).scalar_one()
    )


def referenced_digests(conn: Connection) -> set[str]:
    """Every content digest some version holds."""
    return set(conn.execute(sa.select(versions.c.sha256).distinct()).scalars())


def _version_infos(conn: Connection, name: str, rows: Sequence[Row[Any]]) -> list[VersionInfo]:
    if not rows:
        return []
    pointing: dict[int, list[str]] = {}
    query = sa.select(aliases.c.alias, aliases.c.version).where(aliases.c.model == name)
    for a in conn.execute(query.order_by(aliases.c.alias)):
        pointing.setdefault(a.version, []).append(a.alias)
    profiled = _versions_with_profiles(conn, name, [row.version for row in rows])
    return [
        VersionInfo(
            name=row.model,
            version=row.version,
            sha256=row.sha256,
            size=row.size,
            signature=msgspec.convert(row.signature, Signature),
            status=row.status,
            description=row.description,
            tags=dict(row.tags),
            metrics=dict(row.metrics),
            params=dict(row.params),
            lineage=msgspec.convert(row.lineage, Lineage),
            aliases=pointing.get(row.version, []),
            created_at=_utc(row.created_at),
            has_reference_profile=row.version in profiled,
            task=row.task,
            classes=list(row.classes or []),
        )
        for row in rows
    ]


# --- reference profiles ---------------------------------------------------------------------


def insert_reference_profile(
    conn: Connection, name: str, version: int, profile: ReferenceProfile
) -> None:
    """Store a version's reference profile (in the transaction that inserts the version)."""
    conn.execute(
        reference_profiles.insert().values(
            model=name, version=version, profile=_PROFILE_ENCODER.encode(profile)
        )
    )


def replace_reference_profile(
    conn: Connection, name: str, version: int, profile: ReferenceProfile
) -> None:
    """Store a version's reference profile in place of the one it has, if any."""
    c = reference_profiles.c
    conn.execute(reference_profiles.delete().where(c.model == name, c.version == version))
    insert_reference_profile(conn, name, version, profile)


def get_reference_profile(conn: Connection, name: str, version: int) -> ReferenceProfile | None:
    """A version's reference profile, or ``None`` when it has none."""
    profile = reference_profiles.c
    data = conn.execute(
        sa.select(profile.profile).where(profile.model == name, profile.version == version)
    ).scalar()
    return _PROFILE_DECODER.decode(data) if data is not None else None


def _versions_with_profiles(conn: Connection, name: str, numbers: list[int]) -> set[int]:
    profile = reference_profiles.c
    query = sa.select(profile.version).where(profile.model == name, profile.version.in_(numbers))
    return set(conn.execute(query).scalars())


# --- aliases --------------------------------------------------------------------------------


def get_alias(conn: Connection, name: str, alias: str) -> int | None:
    """The version ``alias`` points at, or ``None``."""
    return conn.execute(
        sa.select(aliases.c.version).where(aliases.c.model == name, aliases.c.alias == alias)
    ).scalar()


def aliases_of(conn: Connection, name: str, version: int) -> list[str]:
    """The aliases pointing at one version, sorted."""
    query = sa.select(aliases.c.alias).where(aliases.c.model == name, aliases.c.version == version)
    return list(conn.execute(query.order_by(aliases.c.alias)).scalars())


def put_alias(conn: Connection, name: str, alias: str, version: int, *, exists: bool) -> None:
    """Point ``alias`` at ``version`` (``exists`` says whether to move it or create it)."""
    if exists:
        conn.execute(
            aliases.update()
            .where(aliases.c.model == name, aliases.c.alias == alias)
            .values(version=version)
        )
    else:
        conn.execute(aliases.insert().values(model=name, alias=alias, version=version))


def delete_alias(conn: Connection, name: str, alias: str) -> None:
    """Remove an alias."""
    conn.execute(aliases.delete().where(aliases.c.model == name, aliases.c.alias == alias))


# --- helpers --------------------------------------------------------------------------------


def _collect(
    conn: Connection,
    query: Callable[[Any, int], sa.Select[Any]],
    after: Any,
    *,
    key: Callable[[Row[Any]], Any],
    keep: Callable[[Row[Any]], bool] | None,
    limit: int,
) -> list[Row[Any]]:
    """Up to ``limit + 1`` rows that ``keep`` accepts, reading in key order past ``after``.

    Filters that SQL cannot express portably (tags in JSON) run here, a batch at a time.
    """
    wanted = limit + 1
    batch = wanted if keep is None else max(wanted, 100)
    found: list[Row[Any]] = []
    last = after
    while len(found) < wanted:
        rows = conn.execute(query(last, batch)).all()
        found.extend(row for row in rows if keep is None or keep(row))
        if len(rows) < batch:
            break
        last = key(rows[-1])
    return found[:wanted]


def _tag_filter(wanted: dict[str, str]) -> Callable[[Row[Any]], bool] | None:
    if not wanted:
        return None
    return lambda row: all(row.tags.get(k) == v for k, v in wanted.items())


def _utc(value: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
