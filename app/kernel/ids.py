"""Unique, unguessable ids without a system call per id, random or ordered by time.

``uuid.uuid4()`` reads ``os.urandom`` each time, a system call that releases the GIL; on the
event loop's thread, getting it back can wait for another thread's whole switch interval (5 ms).
Profiled under load, one per request cost more than the rest of the request's HTTP layer. Here
random bytes are read from the kernel 4 KiB at a time: one read per 256 ids.

:func:`ordered_id` leads with the time, as UUIDv7 does: ids made later sort after ids made
earlier, so a table keyed by them grows at one end of its index. Keyed by random ids, each insert
lands on a random page of an index that outgrows any cache: storing prediction records took
twice as long, and longer as the table grew.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["ordered_id", "unique_id"]

_CHUNK = 4096
_ID_BYTES = 16


class _Ids:
    """Slices of one buffer of kernel randomness; a forked child starts a buffer of its own,
    so server workers never hand out the same id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork stays held
        self._buffer = b""
        self._at = 0

    def next(self, size: int = _ID_BYTES) -> str:
        """``size`` (at most ``_ID_BYTES``) random bytes as hex digits."""
        with self._lock:
            if self._at >= len(self._buffer):
                self._buffer, self._at = os.urandom(_CHUNK), 0
            buffer, start = self._buffer, self._at
            self._at += _ID_BYTES
        return buffer[start : start + size].hex()


_ids = _Ids()


def unique_id() -> str:
    """128 random bits as 32 lowercase hex digits (as unguessable as ``uuid4().hex``), cheap
    enough for every request and prediction."""
    return _ids.next()


def ordered_id() -> str:
    """32 lowercase hex digits, as :func:`unique_id`: the milliseconds since the epoch (12
    digits), then 80 random bits. Sorts by creation time to the millisecond; as unguessable as
    any id whose time is known."""
    return f"{time.time_ns() // 1_000_000:012x}{_ids.next(10)}"
