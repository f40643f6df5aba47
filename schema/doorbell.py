"""The doorbell: after a commit, a Redis PUBLISH tells every gateway process that an account's log grew.

```
writer commits (schema.unit)  ──►  ring(redis, account, seq)  ──►  PUBLISH inboxql:doorbell:<account> <seq>
gateway process (gateway.fanout)  ◄──  PSUBSCRIBE inboxql:doorbell:*   ──►  account_of(channel)
```

The action bell is its sibling: after a mutation queued write-back (schema.actions), `ring_actions` wakes the
sync process that holds the account's lease (synccore.bells, PSUBSCRIBE inboxql:actions:*).

Redis only rings: a lost PUBLISH loses nothing, because readers re-read the change log from their cursor (and
poll it on a timer), and executors look at the queue on a timer too. So a ring never raises; it logs. Nor does
it wait long: a ring is bounded and goes through the client's circuit breaker (schema.redisconn), so a Redis
that never answers costs a commit at most one short timeout, and then nothing while the breaker is open.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from schema.redisconn import RedisUnavailable, guarded

log = logging.getLogger(__name__)

PREFIX = "inboxql:doorbell:"
PATTERN = PREFIX + "*"
ACTIONS_PREFIX = "inboxql:actions:"
ACTIONS_PATTERN = ACTIONS_PREFIX + "*"


def channel(account_id: int) -> str:
    return f"{PREFIX}{account_id}"


def account_of(channel: object) -> int | None:
    """The account a doorbell channel names (as a subscription reports it: str or bytes); None for another."""
    if isinstance(channel, bytes):
        channel = channel.decode()
    if not isinstance(channel, str):
        return None
    account = channel.rsplit(":", 1)[-1]
    return int(account) if account.isdigit() else None


async def ring(redis: Redis, account_id: int, seq: int) -> None:
    """Ring the account's doorbell with its newest seq; best effort (a failure is logged, never raised)."""
    await _publish(redis, channel(account_id), str(seq))


async def ring_actions(redis: Redis, account_id: int) -> None:
    """Wake the executor of the account's queued actions; best effort, like `ring`."""
    await _publish(redis, ACTIONS_PREFIX + str(account_id), "1")


async def _publish(redis: Redis, name: str, message: str) -> None:
    try:
        await guarded(redis, lambda: redis.publish(name, message))
    except RedisUnavailable as exc:  # Redis only rings; readers and executors fall back to polling.
        # Said once per failure; while the breaker is open (no cause), every ring would say it again.
        log.log(logging.WARNING if exc.__cause__ is not None else logging.DEBUG, "%s not rung: %s", name, exc)
