"""The garbage collector of a long-running server process.

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
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle"]

YOUNG_THRESHOLD = 10_000
"""Allocations (less deallocations) of container objects between two young collections
(CPython's default: 700)."""


def settle() -> None:
    """Freeze what start-up built and collect young objects less often (see the module)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
