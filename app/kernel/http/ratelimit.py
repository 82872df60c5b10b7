"""Per-caller token buckets: ``QUARRY_RATE_LIMIT_PER_S`` sustained, ``..._BURST`` at once.

Callers are API keys (by key id) or, for anonymous requests, client addresses. Each check is O(1);
memory is bounded by keeping at most ``max_keys`` buckets and dropping the least recently used
one. A dropped bucket had been idle longest, and one idle for ``burst / rate`` seconds is full
anyway, so dropping it forgets nothing unless more than ``max_keys`` callers are active at once.

Replicas share their buckets through Redis (:class:`RedisRateLimiter`, chosen by
``QUARRY_RATE_LIMIT_URL``, which defaults to ``QUARRY_EVENTS_URL`` when that is Redis): one Lua
script refills and takes a token atomically, on Redis's clock, under
``{QUARRY_REDIS_PREFIX}ratelimit:<caller>``. A Redis failure does not take the API down: the
check falls back to this process's own bucket (each replica then limits on its own), the
failures are counted in ``quarry_rate_limit_store_errors_total`` and warned about once per outage.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.kernel import metrics
from contracts.common import RateLimited

if TYPE_CHECKING:
    from app.kernel.settings import Settings

__all__ = ["RateLimiter", "RedisRateLimiter", "rate_limiter"]

_log = logging.getLogger("quarry.ratelimit")


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
        self._raise_if_waiting(self.acquire(key))

    async def enforce(self, key: str) -> None:
        """:meth:`check`, awaitable: what the auth middleware calls for each request."""
        self.check(key)

    async def aclose(self) -> None:
        """Release what the limiter holds (nothing, in memory)."""

    def _raise_if_waiting(self, wait: float) -> None:
        if wait > 0:
            raise RateLimited(
                f"rate limit exceeded: {self.rate_per_s:g} requests/s with bursts of {self.burst}",
                retry_after=wait,
            )

    def __len__(self) -> int:
        return len(self._buckets)


# Refill by the time elapsed on Redis's clock (replicas' clocks never meet), then take a token;
# answers the seconds until one is there (0 when granted), as a string to keep the fraction.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""
_TIMEOUT_S = 0.25
_RETRY_AFTER_FAILURE_S = 1.0
"""After a failure, checks stay local this long before Redis is tried again."""


class RedisRateLimiter(RateLimiter):
    """Token buckets in Redis, shared by every replica; the in-memory ones stand in while Redis
    fails (see the module docstring). Call :meth:`aclose` on the loop that used it."""

    def __init__(self, rate_per_s: float, burst: int, *, url: str, prefix: str) -> None:
        super().__init__(rate_per_s, burst)
        self.url = url
        self.prefix = f"{prefix}ratelimit:"
        self._client: Any = None
        self._script: Any = None
        self._local_until = 0.0
        self._failing = False
        self._args = [repr(self.rate_per_s), str(self.burst)]

    async def enforce(self, key: str) -> None:
        """Take a token from ``key``'s shared bucket, or raise :class:`RateLimited`."""
        if not self.enabled:
            return
        if time.monotonic() < self._local_until:
            self.check(key)
            return
        try:
            wait = float(await self._take()(keys=[self.prefix + key], args=self._args))
        except Exception as exc:  # any Redis trouble: limit locally rather than fail requests
            self._failed(exc)
            self.check(key)
            return
        if self._failing:
            self._failing = False
            _log.warning("rate limits are shared through Redis again")
        self._raise_if_waiting(wait)

    def _take(self) -> Any:
        if self._script is None:
            import redis.asyncio  # lazily: only shared limits need it

            self._client = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S
            )
            self._script = self._client.register_script(_TAKE)
        return self._script

    def _failed(self, exc: Exception) -> None:
        metrics.shared(
            metrics.Counter,
            "quarry.rate_limit.store_errors",
            description="Rate-limit checks answered per process because Redis failed",
        ).add(1)
        self._local_until = time.monotonic() + _RETRY_AFTER_FAILURE_S
        if not self._failing:
            self._failing = True
            _log.warning(
                "rate limits cannot reach Redis (%s: %s); limiting per process until it is back",
                type(exc).__name__,
                exc,
            )

    async def aclose(self) -> None:
        """Close the Redis connections."""
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()


def rate_limiter(settings: Settings) -> RateLimiter:
    """The limiter ``settings`` describe: shared through Redis or per process."""
    store = settings.rate_limit_store
    if store.startswith("redis"):
        return RedisRateLimiter(
            settings.rate_limit_per_s,
            settings.rate_limit_burst,
            url=store,
            prefix=settings.redis_prefix,
        )
    return RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
