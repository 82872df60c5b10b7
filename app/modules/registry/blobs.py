"""Keeping the artifact store in step with the versions that reference its blobs.

A blob is removed only inside a write transaction that holds the digest's lock and sees no
version referencing it; a registration takes the same lock and writes the blob again if it went
missing meanwhile. So a committed version always has its bytes, and no blob outlives its last
version for longer than a failed registration's clean-up or the start-up sweep.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator

from sqlalchemy.engine import Connection

from app.kernel.db import Database
from app.modules.registry import store
from app.modules.registry.artifacts import ArtifactStore
from contracts.common import IntegrityError
from contracts.registry import ArtifactChunk, VersionInfo

__all__ = ["SWEEP_GRACE_S", "ArtifactKeeper"]

SWEEP_GRACE_S = 3600.0
"""Unreferenced blobs and unfinished writes younger than this survive the start-up sweep."""


class ArtifactKeeper:
    """Writes, streams and removes blobs on behalf of the registry's versions."""

    def __init__(self, db: Database, artifacts: ArtifactStore, logger: logging.Logger) -> None:
        self._db = db
        self._artifacts = artifacts
        self._log = logger

    async def put(self, digest: str, data: bytes) -> None:
        """Store the bytes (atomically, off the event loop) ahead of the version's transaction."""
        await asyncio.to_thread(self._artifacts.put, digest, data)

    def ensure(self, conn: Connection, digest: str, data: bytes) -> None:
        """In the version's transaction: lock the digest and make sure its blob is stored."""
        store.lock_digest(conn, digest)
        if not self._artifacts.exists(digest):  # removed since :meth:`put`: write it again
            self._artifacts.put(digest, data)

    def release(self, conn: Connection, digest: str) -> bool:
        """In a write transaction: remove the blob if no version references it.

        Answers whether the content is gone. The file goes before the commit, under the
        digest's lock, so a registration of the same bytes cannot slip in between.
        """
        store.lock_digest(conn, digest)
        if store.count_references(conn, digest):
            return False
        self._artifacts.delete(digest)
        return True

    async def release_after_failure(self, digest: str) -> None:
        """After a failed registration: remove its blob unless something references it."""
        try:
            await self._db.write(lambda conn: self.release(conn, digest))
        except Exception:
            self._log.warning(
                "registry could not remove blob %s after a failed registration;"
                " the start-up sweep will",
                digest,
                exc_info=True,
            )

    async def sweep(self, grace_s: float = SWEEP_GRACE_S) -> int:
        """Remove unfinished writes and unreferenced blobs older than ``grace_s``.

        Answers how many blobs went. The grace period protects registrations in flight in
        other processes sharing the store. Checks the store first: a missing bucket or refused
        credentials stop the start-up with a :class:`ConfigError` naming QUARRY_ARTIFACTS_URL.
        """
        return await asyncio.to_thread(self._sweep, grace_s)

    def _sweep(self, grace_s: float) -> int:
        self._artifacts.check()
        temporary = self._artifacts.sweep_temporary(grace_s)
        cutoff = time.time() - grace_s
        referenced = self._db.read_sync(store.referenced_digests)
        stale = [
            d for d, mtime in self._artifacts.blobs() if d not in referenced and mtime < cutoff
        ]
        removed = sum(
            self._db.write_sync(functools.partial(self.release, digest=digest)) for digest in stale
        )
        if temporary or removed:
            self._log.info(
                "registry artifact sweep removed %d unfinished writes and %d unreferenced blobs",
                temporary,
                removed,
            )
        return removed

    async def chunks(self, info: VersionInfo, chunk_size: int) -> AsyncIterator[ArtifactChunk]:
        """The bytes of ``info`` in chunks of ``chunk_size`` (at least one), read in a thread."""
        try:
            handle = await asyncio.to_thread(self._artifacts.open, info.sha256)
        except FileNotFoundError:
            raise IntegrityError(
                f"the artifact of {info.name}:{info.version} is missing from the artifact store",
                details={"sha256": info.sha256},
            ) from None
        with handle:
            offset = 0
            while True:
                data = await asyncio.to_thread(handle.read, min(chunk_size, info.size - offset))
                if not data and offset < info.size:
                    raise IntegrityError(
                        f"the artifact of {info.name}:{info.version} is shorter than recorded",
                        details={"sha256": info.sha256, "size": info.size, "read": offset},
                    )
                yield ArtifactChunk(
                    name=info.name,
                    version=info.version,
                    sha256=info.sha256,
                    size=info.size,
                    offset=offset,
                    data=data,
                )
                offset += len(data)
                if offset >= info.size:
                    return
