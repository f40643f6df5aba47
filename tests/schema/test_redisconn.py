"""The Redis client every process makes, against the real Redis."""

from __future__ import annotations

import asyncio
import secrets

from schema.redisconn import MAX_CONNECTIONS, breaker, connect, guarded
from tests.conftest import REDIS_URL


async def test_a_burst_beyond_the_pool_waits_for_connections_and_keeps_the_breaker_closed() -> None:
    redis = connect(REDIS_URL)
    key = f"inboxql-test:burst:{secrets.token_hex(4)}"
    calls = MAX_CONNECTIONS * 4  # past redis-py's default pool too (100), which fails the call beyond it
    try:
        counts = await asyncio.gather(*(guarded(redis, lambda: redis.incr(key)) for _ in range(calls)))
        assert sorted(counts) == list(range(1, calls + 1))
        assert not breaker(redis).open
    finally:
        await redis.delete(key)
        await redis.aclose()
