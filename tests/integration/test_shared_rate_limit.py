"""Rate limits shared by replicas through Redis, and what happens when Redis is gone."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from app.kernel.http.ratelimit import RateLimiter, RedisRateLimiter, rate_limiter
from app.kernel.settings import Settings
from contracts.common import RateLimited
from tests.conftest import REDIS_URL
from tests.fakes.server import free_port


async def granted(limiter: RateLimiter, key: str) -> bool:
    try:
        await limiter.enforce(key)
    except RateLimited:
        return False
    return True


async def test_replicas_spend_one_budget_per_key(redis_namespace: str) -> None:
    replicas = [
        RedisRateLimiter(0.01, 4, url=REDIS_URL, prefix=f"{redis_namespace}:") for _ in range(2)
    ]
    try:
        answers = [await granted(replicas[i % 2], "key-a") for i in range(8)]
        assert answers == [True] * 4 + [False] * 4  # one replica alone would have granted 8
        assert await granted(replicas[0], "key-b")  # other keys have budgets of their own
        with pytest.raises(RateLimited) as raised:
            await replicas[1].enforce("key-a")
        assert raised.value.retry_after is not None
        assert raised.value.retry_after > 1
    finally:
        for limiter in replicas:
            await limiter.aclose()


async def test_the_shared_bucket_refills_at_the_rate(redis_namespace: str) -> None:
    limiter = RedisRateLimiter(1000, 1, url=REDIS_URL, prefix=f"{redis_namespace}:")
    try:
        granted_count = 0
        for _ in range(50):
            granted_count += await granted(limiter, "key")
        assert granted_count > 1  # at 1000/s a token comes back between requests
    finally:
        await limiter.aclose()


async def test_without_redis_requests_are_limited_per_process_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    limiter = RedisRateLimiter(0.01, 2, url=dead, prefix="x:")
    errors_before = REGISTRY.get_sample_value("quarry_rate_limit_store_errors_total") or 0.0
    try:
        with caplog.at_level(logging.WARNING, logger="quarry.ratelimit"):
            answers = [await granted(limiter, "key") for _ in range(3)]
        assert answers == [True, True, False]  # the API stays up, limited by its own bucket
        warnings = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
        assert len(warnings) == 1
        errors = REGISTRY.get_sample_value("quarry_rate_limit_store_errors_total") or 0.0
        assert errors > errors_before
    finally:
        await limiter.aclose()


def test_the_store_follows_the_events_url_unless_set() -> None:
    assert type(rate_limiter(Settings())) is RateLimiter
    on_redis = Settings(events_url=REDIS_URL)
    assert isinstance(rate_limiter(on_redis), RedisRateLimiter)
    assert type(rate_limiter(on_redis.replace(rate_limit_url="memory://"))) is RateLimiter
    explicit = Settings(rate_limit_url=REDIS_URL)
    assert isinstance(rate_limiter(explicit), RedisRateLimiter)
