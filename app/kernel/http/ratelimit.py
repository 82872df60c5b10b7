"""Per-caller token buckets: ``QUARRY_RATE_LIMIT_PER_S`` sustained, ``..._BURST`` at once.

Callers are API keys (by key id) or, for anonymous requests, client addresses. Each check is O(1);
memory is bounded by keeping at most ``max_keys`` buckets and dropping the least recently used
one. A dropped bucket had been idle longest, and one idle for ``burst / rate`` seconds is full
anyway, so dropping it forgets nothing unless more than ``max_keys`` callers are active at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from contracts.common import RateLimited

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets per caller key. ``rate_per_s`` 0 disables limiting.

    Every method is synchronous, so under asyncio a check cannot interleave with another.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = float(rate_per_s)
        self.burst = max(1, int(burst))
        self._max_keys = max_keys
        self._clock = clock
        # key -> (tokens left, clock reading when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether any limit applies."""
        return self.rate_per_s > 0

    def acquire(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when granted, else seconds until one will be there."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - then) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def check(self, key: str) -> None:
        """Take a token for ``key`` or raise :class:`RateLimited` with its ``retry_after``."""
        wait = self.acquire(key)
        if wait > 0:
            raise RateLimited(
                f"rate limit exceeded: {self.rate_per_s:g} requests/s with bursts of {self.burst}",
                retry_after=wait,
            )

    def __len__(self) -> int:
        return len(self._buckets)
