"""Artifact bytes kept on an inference host's disk, by sha256, so a reload skips the registry.

Files live at ``<data_dir>/artifact-cache/<sha256>``, written to a temporary file and renamed, so
a reader sees a whole file or none; every read is checked against its name (a corrupt file is
deleted and the caller fetches again). The cache stays under its byte bound by removing the least
recently used files (a hit refreshes a file's modification time). Every method blocks: callers
run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path

from app.kernel.settings import Settings
from app.modules.inference.settings import InferenceSettings

__all__ = ["ArtifactCache", "cache_for"]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_PART_SUFFIX = ".part"
_STALE_PART_S = 3600.0
"""Unfinished writes older than this are left-overs of a crash and are removed."""


class ArtifactCache:
    """A folder of artifact files named by their sha256, at most ``max_bytes`` in all."""

    def __init__(self, root: str | Path, *, max_bytes: int, logger: logging.Logger) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._log = logger

    def path(self, digest: str) -> Path:
        """Where the copy of ``digest`` lives (``ValueError`` for anything but a sha256 hex)."""
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a lowercase sha256 hex digest: {digest!r}")
        return self.root / digest

    def read(self, digest: str) -> bytes | None:
        """The cached bytes of ``digest``, or ``None`` when absent or corrupt (then deleted)."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            self._log.warning("artifact cache file %s is corrupt; fetching it again", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # most recently used
        return data

    def write(self, digest: str, data: bytes) -> None:
        """Keep ``data`` (already verified to hash to ``digest``), then evict down to the bound.

        Bytes larger than the whole cache are not kept. Failures are logged, never raised: the
        cache only saves work.
        """
        if len(data) > self.max_bytes:
            return
        path = self.path(digest)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f"{digest[:16]}.", suffix=_PART_SUFFIX)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            self.evict(keep=digest)
        except OSError:
            self._log.warning("could not keep artifact %s in %s", digest, self.root, exc_info=True)

    def evict(self, *, keep: str | None = None) -> int:
        """Remove least recently used files until the total fits; answer how many went."""
        entries: list[tuple[float, int, Path]] = []
        cutoff = time.time() - _STALE_PART_S
        for entry in self._entries():
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                if entry.name.endswith(_PART_SUFFIX):
                    if stat.st_mtime < cutoff:
                        entry.unlink()
                elif _DIGEST.fullmatch(entry.name):
                    entries.append((stat.st_mtime, stat.st_size, entry))
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, entry in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if entry.name == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
            total -= size
        return removed

    def _entries(self) -> list[Path]:
        try:
            return list(self.root.iterdir())
        except FileNotFoundError:
            return []


def cache_for(settings: Settings, logger: logging.Logger) -> ArtifactCache | None:
    """The host's cache, or ``None`` when it is off or would only copy bytes already on disk.

    The registry running in this process on a local folder already keeps every artifact here.
    """
    max_bytes = settings.module_config(InferenceSettings).artifact_cache_bytes
    if max_bytes <= 0:
        return None
    location = settings.artifacts_location
    if settings.hosts("registry") and (location.startswith("file://") or "://" not in location):
        return None
    return ArtifactCache(settings.data_dir / "artifact-cache", max_bytes=max_bytes, logger=logger)
