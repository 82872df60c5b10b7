"""The memory of a long-running server process: its garbage collector and SQLite's caches.

CPython's cyclic collector, at its defaults, suits short scripts. In a server it costs much more:
every collection of the oldest generation walks every object the process holds (the web
framework, SQLAlchemy, the modules' state: some 200,000 objects once Quarry has started), and
under load, the objects of the requests in flight outnumber the youngest generation's threshold
of 700, so they are promoted and keep triggering those full collections. Measured on one worker
at 64 concurrent requests, that was about a fifth of the event loop's time, in pauses of up to
170 ms.

:func:`settle` runs once, after the platform has started and before the first request:

- it collects what start-up left behind, then **freezes** everything that remains
  (:func:`gc.freeze`): those objects live as long as the process, so no later collection walks
  them;
- it raises the youngest generation's threshold to :data:`YOUNG_THRESHOLD` allocations, above
  what a worker's requests in flight hold at once, so they are freed by reference counting
  before a collection can promote them.

Reference cycles are still collected; only less often, and each collection walks only what was
created since start-up.

It also gives SQLite a process-wide **soft heap limit** of :data:`SQLITE_HEAP_BYTES`. Each pooled
connection to each module's database may cache 2 MB of pages; with two workers under load,
SQLite's allocations in each grew from 4 to 17 MiB in two minutes (and with them the worker's
RSS), as the prediction records' table grew. Under the limit, SQLite recycles cached pages
instead of allocating more.

The embedded use (``app.connect()``) settles nothing: the host process's memory is its own.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3

__all__ = ["SQLITE_HEAP_BYTES", "YOUNG_THRESHOLD", "settle"]

YOUNG_THRESHOLD = 10_000
"""Allocations (less deallocations) of container objects between two young collections
(CPython's default: 700)."""
SQLITE_HEAP_BYTES = 8 * 2**20
"""What SQLite may keep allocated in the process, page caches of every connection included,
before it recycles cached pages (a soft limit: nothing fails above it)."""


def settle() -> None:
    """Freeze what start-up built, collect young objects less often and bound SQLite's heap (see
    the module)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"PRAGMA soft_heap_limit={SQLITE_HEAP_BYTES}")
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
