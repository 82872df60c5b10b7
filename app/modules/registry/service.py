"""The registry on this process: versions in the module's database, bytes in the artifact store."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from app.kernel import context
from app.kernel.db import Database
from app.kernel.events import Outbox
from app.kernel.module import BuiltModule, ModuleContext
from app.modules.registry import alias_history, store
from app.modules.registry.artifacts import ArtifactStore, open_artifact_store
from app.modules.registry.blobs import SWEEP_GRACE_S, ArtifactKeeper
from app.modules.registry.classifiers import CONVERTED, decide, remove_zipmap
from app.modules.registry.lookup import (
    found,
    locked_version,
    no_alias,
    no_model,
    require_model,
    resolve,
)
from app.modules.registry.profiles import check_profile
from app.modules.registry.references import build_reference
from app.modules.registry.signature import read_signature
from app.modules.registry.validation import (
    DEFAULT_MAX_TENSOR_BYTES,
    check_alias,
    check_chunk_size,
    check_limit,
    check_metrics,
    check_ref,
    check_str_map,
    check_text,
    check_version_number,
    could_prefix_a_name,
    decode_cursor,
    encode_cursor,
)
from contracts.common import Conflict, InvalidInput, ModelRef, NotFound, Page, validate_name
from contracts.registry import (
    AliasChange,
    AliasInfo,
    ArchiveVersion,
    ArtifactChunk,
    DeleteAlias,
    DeleteVersion,
    FetchArtifact,
    GetAlias,
    GetModel,
    GetReferenceProfile,
    GetVersion,
    ListAliasHistory,
    ListModels,
    ListVersions,
    ModelAliasChanged,
    ModelInfo,
    ModelVersionRegistered,
    ReferenceProfile,
    RegisterVersion,
    RollbackAlias,
    SetAlias,
    SetReference,
    UpdateModel,
    VersionDeleted,
    VersionInfo,
)

__all__ = ["LocalRegistryService", "build"]

_MAX_IDEMPOTENCY_KEY = 200


class LocalRegistryService:
    """:class:`contracts.registry.RegistryService` over a :class:`Database` and an artifact store.

    Every change runs in one write transaction that locks the model's row first, so changes to
    one model are serialised: version numbers come from a per-model counter (never reused), and
    events enter the outbox in the transaction that makes the change.
    """

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        artifacts: ArtifactStore,
        logger: logging.Logger | None = None,
        max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    ) -> None:
        self._db = db
        self._max_tensor_bytes = max_tensor_bytes
        self._outbox = outbox
        self._blobs = ArtifactKeeper(db, artifacts, logger or logging.getLogger("quarry.registry"))

    # --- versions ---------------------------------------------------------------------------

    async def register_version(self, request: RegisterVersion) -> VersionInfo:
        """Parse, hash and store the ONNX bytes; allocate the next version number.

        A reference profile, when given, is stored in the transaction that inserts the version.
        With an idempotency key in the call context, registering the same model again under
        that key answers the first version (``Conflict`` if the bytes differ).
        """
        name = validate_name(request.name, what="model name")
        description = check_text(request.description, "description")
        tags = check_str_map(request.tags, "tags")
        metrics = check_metrics(request.metrics)
        params = check_str_map(request.params, "params")
        profile = request.reference_profile
        if profile is not None:
            await asyncio.to_thread(check_profile, profile)
        key = _idempotency_key()
        converted = await asyncio.to_thread(remove_zipmap, bytes(request.artifact))
        data = converted.data
        if converted.zipmap_removed:
            params = {**params, "converted": CONVERTED}
        signature = await asyncio.to_thread(
            read_signature, data, max_tensor_bytes=self._max_tensor_bytes
        )
        task, classes = decide(
            task=request.task,
            classes=request.classes,
            signature=signature,
            graph_classes=converted.classes,
            lineage=request.lineage,
            profile=profile,
        )
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        await self._blobs.put(digest, data)

        def register(conn: Connection) -> VersionInfo:
            now = datetime.now(UTC)
            store.ensure_model(conn, name, now)
            store.lock_model(conn, name)
            if key is not None and (earlier := store.version_by_idempotency_key(conn, name, key)):
                if earlier.sha256 != digest:
                    raise Conflict(
                        f"idempotency key {key!r} was used for {name}:{earlier.version} with"
                        " different model bytes",
                        details={"model": name, "version": earlier.version},
                    )
                return earlier
            self._blobs.ensure(conn, digest, data)
            info = VersionInfo(
                name=name,
                version=store.allocate_version(conn, name, now),
                sha256=digest,
                size=len(data),
                signature=signature,
                status=store.READY,
                created_at=now,
                has_reference_profile=profile is not None,
                description=description,
                tags=tags,
                metrics=metrics,
                params=params,
                lineage=request.lineage,
                task=task,
                classes=classes,
            )
            store.insert_version(conn, info, key)
            if profile is not None:
                store.insert_reference_profile(conn, name, info.version, profile)
            self._outbox.add(
                conn,
                ModelVersionRegistered(
                    name=name, version=info.version, sha256=digest, size=len(data)
                ),
            )
            return info

        try:
            return await self._db.write(register)
        except BaseException:
            await self._blobs.release_after_failure(digest)
            raise

    async def get_version(self, request: GetVersion) -> VersionInfo:
        """Resolve ``name:N``, ``name@alias`` or a bare ``name`` (champion, else highest live)."""
        ref = check_ref(ModelRef.parse(request.ref))
        return await self._db.read(lambda conn: resolve(conn, ref))

    async def get_reference_profile(self, request: GetReferenceProfile) -> ReferenceProfile:
        """The reference profile of the version ``request.ref`` resolves to, or ``NotFound``."""
        ref = check_ref(ModelRef.parse(request.ref))

        def read(conn: Connection) -> ReferenceProfile:
            info = resolve(conn, ref)
            profile = store.get_reference_profile(conn, info.name, info.version)
            if profile is None:
                raise NotFound(
                    f"{info.name}:{info.version} was registered without a reference profile",
                    details={"model": info.name, "version": info.version},
                )
            return profile

        return await self._db.read(read)

    async def set_reference(self, request: SetReference) -> VersionInfo:
        """Run the version on the rows of ``request.columns`` and store their profile (in place
        of any earlier one), with the task and classes given (see :mod:`.references`)."""
        name = validate_name(request.name, what="model name")
        number = check_version_number(request.version)
        info = await self._db.read(
            lambda c: found(store.get_version(c, name, number), name, number)
        )
        task, classes = decide(
            task=request.task or info.task,
            classes=request.classes or info.classes,
            signature=info.signature,
            graph_classes=[],
            lineage=info.lineage,
            profile=None,
        )
        columns = {k: v.to_numpy() for k, v in request.columns.items()}
        data = b"".join([chunk.data async for chunk in self._blobs.chunks(info, 1 << 20)])
        profile = await asyncio.to_thread(
            build_reference, info, data, columns, task=task, classes=classes, seed=request.seed
        )
        check_profile(profile)

        def store_profile(conn: Connection) -> VersionInfo:
            locked_version(conn, name, number)
            store.replace_reference_profile(conn, name, number, profile)
            store.set_task_and_classes(conn, name, number, task, classes)
            return found(store.get_version(conn, name, number), name, number)

        return await self._db.write(store_profile)

    async def list_versions(self, request: ListVersions) -> Page[VersionInfo]:
        """One page of a model's versions, newest first."""
        name = validate_name(request.name, what="model name")
        limit = check_limit(request.limit)
        tags = check_str_map(request.tags, "tags")
        before = None
        if request.cursor:
            cursor_name, before = decode_cursor(request.cursor, "v", str, int)
            if cursor_name != name:
                raise InvalidInput("invalid cursor: it belongs to another model's list")

        def page(conn: Connection) -> list[VersionInfo]:
            require_model(conn, name)
            return store.page_versions(
                conn,
                name,
                before=before,
                include_archived=request.include_archived,
                tags=tags,
                limit=limit,
            )

        items = await self._db.read(page)
        more = items[limit:]
        items = items[:limit]
        return Page(
            items=items, next_cursor=encode_cursor("v", name, items[-1].version) if more else None
        )

    async def archive_version(self, request: ArchiveVersion) -> VersionInfo:
        """Archive or restore a version; a version aliases point at cannot be archived."""
        name = validate_name(request.name, what="model name")
        number = check_version_number(request.version)
        status = store.ARCHIVED if request.archived else store.READY

        def change(conn: Connection) -> VersionInfo:
            info = locked_version(conn, name, number)
            if status == store.ARCHIVED and info.aliases:
                raise _aliased(info, "archived")
            if info.status == status:
                return info
            store.set_status(conn, name, number, status)
            return found(store.get_version(conn, name, number), name, number)

        return await self._db.write(change)

    async def delete_version(self, request: DeleteVersion) -> VersionDeleted:
        """Delete a version no alias points at; the bytes go when no other version shares them."""
        name = validate_name(request.name, what="model name")
        number = check_version_number(request.version)

        def delete(conn: Connection) -> VersionDeleted:
            info = locked_version(conn, name, number)
            if info.aliases:
                raise _aliased(info, "deleted")
            store.delete_version(conn, name, number)
            gone = self._blobs.release(conn, info.sha256)
            return VersionDeleted(name=name, version=number, artifact_deleted=gone)

        return await self._db.write(delete)

    def fetch_artifact(self, request: FetchArtifact) -> AsyncIterator[ArtifactChunk]:
        """Stream the artifact bytes in chunks of ``request.chunk_size`` (at least one chunk)."""
        return self._stream(request)

    async def _stream(self, request: FetchArtifact) -> AsyncIterator[ArtifactChunk]:
        chunk_size = check_chunk_size(request.chunk_size)
        info = await self.get_version(GetVersion(ref=request.ref))
        async for chunk in self._blobs.chunks(info, chunk_size):
            yield chunk

    # --- models -----------------------------------------------------------------------------

    async def get_model(self, request: GetModel) -> ModelInfo:
        """A model by name."""
        name = validate_name(request.name, what="model name")
        return await self._db.read(lambda conn: require_model(conn, name))

    async def update_model(self, request: UpdateModel) -> ModelInfo:
        """Change a model's description and/or tags."""
        name = validate_name(request.name, what="model name")
        description = request.description
        description = None if description is None else check_text(description, "description")
        tags = None if request.tags is None else check_str_map(request.tags, "tags")

        def change(conn: Connection) -> ModelInfo:
            if not store.lock_model(conn, name):
                raise no_model(name)
            if description is not None or tags is not None:
                now = datetime.now(UTC)
                store.update_model(conn, name, now, description=description, tags=tags)
            return require_model(conn, name)

        return await self._db.write(change)

    async def list_models(self, request: ListModels) -> Page[ModelInfo]:
        """One page of models ordered by name."""
        limit = check_limit(request.limit)
        tags = check_str_map(request.tags, "tags")
        after = decode_cursor(request.cursor, "m", str)[0] if request.cursor else None
        prefix = request.prefix or None
        if prefix is not None and not could_prefix_a_name(prefix):
            return Page(items=[])  # no name starts with it (and the database need not see it)
        items = await self._db.read(
            lambda conn: store.page_models(conn, after=after, prefix=prefix, tags=tags, limit=limit)
        )
        more = items[limit:]
        items = items[:limit]
        return Page(items=items, next_cursor=encode_cursor("m", items[-1].name) if more else None)

    # --- aliases ----------------------------------------------------------------------------

    async def set_alias(self, request: SetAlias) -> AliasInfo:
        """Point an alias at a live version, moving it if it exists (no event when unchanged)."""
        name = validate_name(request.name, what="model name")
        alias = check_alias(request.alias)
        number = check_version_number(request.version)
        reason = check_text(request.reason, "reason")

        def change(conn: Connection) -> AliasInfo:
            info = locked_version(conn, name, number)
            if info.status == store.ARCHIVED:
                raise Conflict(
                    f"{name}:{number} is archived and cannot be the target of an alias;"
                    " restore it first",
                    details={"model": name, "version": number},
                )
            previous = store.get_alias(conn, name, alias)
            if previous != number:
                self._move_alias(
                    conn,
                    AliasChange(
                        name=name,
                        alias=alias,
                        action="set",
                        version=number,
                        previous_version=previous,
                        reason=reason,
                        at=alias_history.now(),
                    ),
                )
            return AliasInfo(name=name, alias=alias, version=number)

        return await self._db.write(change)

    async def get_alias(self, request: GetAlias) -> AliasInfo:
        """Read an alias."""
        name = validate_name(request.name, what="model name")
        alias = check_alias(request.alias)

        def read(conn: Connection) -> AliasInfo:
            number = store.get_alias(conn, name, alias)
            if number is None:
                require_model(conn, name)
                raise no_alias(name, alias)
            return AliasInfo(name=name, alias=alias, version=number)

        return await self._db.read(read)

    async def delete_alias(self, request: DeleteAlias) -> AliasInfo:
        """Remove an alias; answers the version it pointed at."""
        name = validate_name(request.name, what="model name")
        alias = check_alias(request.alias)

        def delete(conn: Connection) -> AliasInfo:
            if not store.lock_model(conn, name):
                raise no_model(name)
            previous = store.get_alias(conn, name, alias)
            if previous is None:
                raise no_alias(name, alias)
            store.delete_alias(conn, name, alias)
            change = AliasChange(
                name=name,
                alias=alias,
                action="delete",
                previous_version=previous,
                at=alias_history.now(),
            )
            self._outbox.add(
                conn,
                ModelAliasChanged(name=name, alias=alias, version=None, previous_version=previous),
            )
            alias_history.record(conn, change)
            return AliasInfo(name=name, alias=alias, version=previous)

        return await self._db.write(delete)

    async def rollback_alias(self, request: RollbackAlias) -> AliasChange:
        """Move an alias back to where it pointed before its last move, the reason recorded;
        what follows it (bare names, ``name@alias`` routes) follows on ``ModelAliasChanged``."""
        name = validate_name(request.name, what="model name")
        alias = check_alias(request.alias)
        reason = check_text(request.reason, "reason") or "rolled back"

        def roll_back(conn: Connection) -> AliasChange:
            if not store.lock_model(conn, name):
                raise no_model(name)
            target = alias_history.previous_version(conn, name, alias)
            change = AliasChange(
                name=name,
                alias=alias,
                action="rollback",
                version=target,
                previous_version=store.get_alias(conn, name, alias),
                reason=reason,
                at=alias_history.now(),
            )
            self._move_alias(conn, change)
            return change

        return await self._db.write(roll_back)

    async def list_alias_history(self, request: ListAliasHistory) -> Page[AliasChange]:
        """One page of an alias's changes, newest first."""
        name = validate_name(request.name, what="model name")
        alias = check_alias(request.alias)
        limit = check_limit(request.limit)
        before = decode_cursor(request.cursor, "ah", int)[0] if request.cursor else None

        def read(conn: Connection) -> list[tuple[int, AliasChange]]:
            require_model(conn, name)
            return alias_history.page_changes(conn, name, alias, before, limit)

        rows = await self._db.read(read)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            items=[change for _, change in rows],
            next_cursor=encode_cursor("ah", rows[-1][0]) if more else None,
        )

    def _move_alias(self, conn: Connection, change: AliasChange) -> None:
        """Point the alias at ``change.version``, with its event and its history line."""
        assert change.version is not None
        exists = change.previous_version is not None
        store.put_alias(conn, change.name, change.alias, change.version, exists=exists)
        self._outbox.add(
            conn,
            ModelAliasChanged(
                name=change.name,
                alias=change.alias,
                version=change.version,
                previous_version=change.previous_version,
            ),
        )
        alias_history.record(conn, change)

    # --- housekeeping -----------------------------------------------------------------------

    async def sweep_artifacts(self, *, grace_s: float = SWEEP_GRACE_S) -> int:
        """Remove unfinished writes and unreferenced blobs older than ``grace_s`` (default 1 h).

        Answers how many blobs went; runs at start-up.
        """
        return await self._blobs.sweep(grace_s)


def _aliased(info: VersionInfo, action: str) -> Conflict:
    return Conflict(
        f"{info.name}:{info.version} cannot be {action} while aliases point at it:"
        f" {', '.join(info.aliases)}; move or delete them first",
        details={"model": info.name, "version": info.version, "aliases": info.aliases},
    )


def _idempotency_key() -> str | None:
    key = context.current().idempotency_key
    if key is not None and not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY:
        raise InvalidInput(
            f"idempotency keys hold 1-{_MAX_IDEMPOTENCY_KEY} characters",
            details={"field": "idempotency_key"},
        )
    return key


async def build(ctx: ModuleContext) -> BuiltModule:
    """Build the registry for this process; its start-up hook sweeps the artifact store.

    The composition root runs the migrations (``migrations/registry``) before ``on_startup``.
    """
    service = LocalRegistryService(
        db=ctx.db,
        outbox=ctx.outbox,
        artifacts=open_artifact_store(ctx.settings.artifacts_location),
        logger=ctx.logger,
        max_tensor_bytes=ctx.settings.max_tensor_bytes,
    )

    async def sweep_artifacts() -> None:
        await service.sweep_artifacts()

    return BuiltModule(service=service, on_startup=[sweep_artifacts])
