"""The doorbell: after a commit, a Redis PUBLISH tells every gateway process that an account's log grew.

```
writer commits (schema.unit)  ──►  ring(redis, account, seq)  ──►  PUBLISH inboxql:doorbell:<account> <seq>
gateway process (gateway.fanout)  ◄──  PSUBSCRIBE inboxql:doorbell:*   ──►  account_of(channel)
```

Redis only rings: a lost PUBLISH loses nothing, because readers re-read the change log from their cursor (and
poll it on a timer). So `ring` never raises; it logs.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

log = logging.getLogger(__name__)

PREFIX = "inboxql:doorbell:"
PATTERN = PREFIX + "*"


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
    try:
        await redis.publish(channel(account_id), str(seq))
    except Exception as exc:  # Redis is only the doorbell; readers fall back to polling the log.
        log.warning("doorbell for account %s not rung: %s", account_id, exc)
