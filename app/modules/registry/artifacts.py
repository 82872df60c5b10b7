"""Content-addressed artifact storage: the bytes of a version live under their sha256.

:class:`ArtifactStore` is the seam: :class:`LocalArtifactStore` keeps blobs in a folder as
``<root>/sha256/<aa>/<hex>``; ``app.modules.registry.s3`` keeps them in an S3-compatible bucket.
Local writes go to ``<root>/tmp/`` first, are fsynced and renamed into place, so a blob is either
whole or absent. Every method blocks: callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from app.kernel.settings import ConfigError

__all__ = ["ArtifactStore", "LocalArtifactStore", "open_artifact_store"]

_DIGEST = re.compile(r"[0-9a-f]{64}")


class ArtifactStore(Protocol):
    """Where artifact bytes live, addressed by their lowercase hex sha256."""

    def check(self) -> None:
        """Raise :class:`ConfigError` naming ``QUARRY_ARTIFACTS_URL`` unless the store is usable."""
        ...

    def put(self, digest: str, data: bytes) -> bool:
        """Store ``data`` under ``digest`` unless it is there; answer whether it was written.

        A blob already present has its modification time refreshed, so a sweep running at the
        same time treats it as new.
        """
        ...

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored."""
        ...

    def open(self, digest: str) -> BinaryIO:
        """The blob opened for reading; ``FileNotFoundError`` when it is not stored."""
        ...

    def delete(self, digest: str) -> bool:
        """Remove the blob; answer whether there was one."""
        ...

    def blobs(self) -> Iterator[tuple[str, float]]:
        """Every stored blob: its digest and when it was last written (epoch seconds)."""
        ...

    def sweep_temporary(self, older_than_s: float) -> int:
        """Remove unfinished writes older than ``older_than_s``; answer how many went."""
        ...


class LocalArtifactStore:
    """Blobs in a local folder, written atomically and durably."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blob_root = self.root / "sha256"
        self.tmp_root = self.root / "tmp"

    def path(self, digest: str) -> Path:
        """Where the blob of ``digest`` lives (``ValueError`` for anything but a sha256 hex)."""
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a lowercase sha256 hex digest: {digest!r}")
        return self.blob_root / digest[:2] / digest

    def check(self) -> None:
        """Nothing to check: folders are created on the first write."""

    def put(self, digest: str, data: bytes) -> bool:
        path = self.path(digest)
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
            return False
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp_root, prefix=f"{digest[:16]}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            created = self._make_parents(path)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        for folder in (path.parent, *created):
            _fsync_dir(folder)
        return True

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def open(self, digest: str) -> BinaryIO:
        return self.path(digest).open("rb")

    def delete(self, digest: str) -> bool:
        path = self.path(digest)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def blobs(self) -> Iterator[tuple[str, float]]:
        if not self.blob_root.is_dir():
            return
        for folder in self.blob_root.iterdir():
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if _DIGEST.fullmatch(entry.name) and entry.name[:2] == folder.name:
                    with contextlib.suppress(FileNotFoundError):
                        yield entry.name, entry.stat().st_mtime

    def sweep_temporary(self, older_than_s: float) -> int:
        if not self.tmp_root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in self.tmp_root.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
        return removed

    def _make_parents(self, path: Path) -> list[Path]:
        """Create the blob's folders; answer the parents of those created (to fsync them)."""
        created = []
        for folder in (path.parent.parent, path.parent):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                created.append(folder.parent)
        return created


def open_artifact_store(location: str) -> ArtifactStore:
    """The store for ``QUARRY_ARTIFACTS_URL``: a folder path, ``file://`` or ``s3://`` URL.

    Opening does no I/O; :meth:`ArtifactStore.check` (run by the start-up sweep) does.
    """
    if location.startswith("s3://"):
        from app.modules.registry.s3 import S3ArtifactStore

        return S3ArtifactStore(location)
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif "://" in location:
        raise ConfigError(
            f"QUARRY_ARTIFACTS_URL={location!r} is not supported:"
            " expected a local folder, file:// or s3://bucket/prefix"
        )
    return LocalArtifactStore(location)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
