"""The Redis clients every process makes (`connect`), and the circuit breaker their short calls go through
(`guarded`).

Redis only rings and counts (doorbells, action bells, rate limits): no caller should wait on it for long. A
Redis that accepts connections but never answers (a stopped process, a black-holed network) would otherwise
hold each caller for as long as the socket lives: redis-py before 8.0 has no socket timeout at all by default.
So:

* clients are made with short connect and read timeouts (`TIMEOUT`), and a bounded pool that a burst waits for;
* each guarded call is bounded once more by asyncio, whatever the client's settings;
* after a failed call, the client's breaker is open for `COOLDOWN` seconds: calls fail at once
  (`RedisUnavailable`) instead of each waiting out its timeout. Then one call tries again (the others still
  fail at once until it is answered) and a success closes the breaker. A dead Redis thus costs one timeout per
  cooldown, not one per call.

Subscriptions (gateway.fanout, synccore.bells) read with timeouts of their own and reconnect with backoff;
they are not guarded.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis

T = TypeVar("T")

# Connect and read timeout of every client, and the bound of a guarded call (a PUBLISH or an INCRBY answers in
# well under a millisecond on a live Redis).
TIMEOUT = 1.0
COOLDOWN = 5.0
# Connections of one client (calls take one for well under a millisecond; a subscription holds one).
MAX_CONNECTIONS = 64


class RedisUnavailable(Exception):
    """Redis did not answer in time, failed, or its breaker is open."""


def connect(url: str, *, timeout: float = TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client of at most `max_connections` connections; a call finding them all busy waits for one (up to
    `timeout`) instead of failing: a burst of calls (a thousand sockets' rate-limit charges at once) is not an
    outage, and must not open the breaker (redis-py's default pool raises MaxConnectionsError past 100)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
    )
    return Redis.from_pool(pool)


class Breaker:
    def __init__(self, timeout: float = TIMEOUT, cooldown: float = COOLDOWN) -> None:
        self.timeout = timeout
        self.cooldown = cooldown
        self._retry_at = 0.0  # 0: closed; else calls fail at once until then, and the first after it probes

    @property
    def open(self) -> bool:
        return self._retry_at != 0.0

    def _admit(self, now: float) -> bool:
        if self._retry_at == 0.0:
            return True
        if now < self._retry_at:
            return False
        self._retry_at = now + self.cooldown  # this call probes; the others keep failing at once meanwhile
        return True

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if not self._admit(time.monotonic()):
            raise RedisUnavailable("Redis is unavailable (circuit open)")
        try:
            async with asyncio.timeout(self.timeout):
                result = await fn()
        except Exception as exc:
            _still_cancelled()
            self._retry_at = time.monotonic() + self.cooldown
            raise RedisUnavailable(f"Redis is unavailable: {type(exc).__name__}") from exc
        _still_cancelled()
        self._retry_at = 0.0
        return result


def _still_cancelled() -> None:
    """Raise the current task's cancellation if one was asked for during the call: redis-py (8.2) shields parts of
    a command from cancellation and may then return normally, or fail, with the cancellation swallowed; a task
    told to stop (a subscriber whose client left, a sync being shut down) would run on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


_breakers: weakref.WeakKeyDictionary[Redis, Breaker] = weakref.WeakKeyDictionary()


def breaker(redis: Redis) -> Breaker:
    """The breaker of a client: every guarded call through the same client shares it."""
    found = _breakers.get(redis)
    if found is None:
        found = _breakers[redis] = Breaker()
    return found


async def guarded(redis: Redis, fn: Callable[[], Awaitable[T]]) -> T:
    """fn() (a call on `redis`), bounded by TIMEOUT and by the client's breaker; RedisUnavailable otherwise."""
    return await breaker(redis).call(fn)
