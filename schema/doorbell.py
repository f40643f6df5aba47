"""The doorbell: after a commit, a Redis PUBLISH tells every gateway process that an account's log grew.

```
writer commits (schema.unit)  ──►  ring(redis, account, seq)  ──►  PUBLISH inboxql:<db>:doorbell:<account> <seq>
gateway process (gateway.fanout)  ◄──  PSUBSCRIBE inboxql:<db>:doorbell:*   ──►  account_of(channel)
```

The action bell is its sibling: after a mutation queued write-back (schema.actions), `ring_actions` wakes the
sync process that holds the account's lease (synccore.bells, PSUBSCRIBE inboxql:<db>:actions:*). The accounts
bell (`ring_accounts`, inboxql:<db>:accounts) tells every sync process that the set of accounts or their
credentials changed (added, removed, re-authorized): their next round starts at once instead of on its timer, so
a new account's inbox is downloading while `inboxql account add` is still printing its id. <db> is the
database's name (`Doorbells.of(engine)`): deployments and test runs sharing one Redis do not hear each other.

Redis only rings: a lost PUBLISH loses nothing, because readers re-read the change log from their cursor (and
poll it on a timer), and executors look at the queue on a timer too. So a ring never raises; it logs. Nor does
it wait long: a ring is bounded and goes through the client's circuit breaker (schema.redisconn), so a Redis
that never answers costs a commit at most one short timeout, and then nothing while the breaker is open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.redisconn import RedisUnavailable, guarded

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Doorbells:
    """The channels of one deployment: named after its database, so that deployments (or test runs) sharing a
    Redis never hear each other's rings (a ring from elsewhere would wake readers for nothing)."""

    namespace: str

    @classmethod
    def of(cls, engine: AsyncEngine) -> Doorbells:
        return cls(engine.url.database or "default")

    @classmethod
    def for_url(cls, database_url: str) -> Doorbells:
        return cls(make_url(database_url).database or "default")

    @property
    def prefix(self) -> str:
        return f"inboxql:{self.namespace}:doorbell:"

    @property
    def actions_prefix(self) -> str:
        return f"inboxql:{self.namespace}:actions:"

    @property
    def pattern(self) -> str:
        return self.prefix + "*"

    @property
    def actions_pattern(self) -> str:
        return self.actions_prefix + "*"

    @property
    def accounts_channel(self) -> str:
        return f"inboxql:{self.namespace}:accounts"

    def channel(self, account_id: int) -> str:
        return f"{self.prefix}{account_id}"

    def actions_channel(self, account_id: int) -> str:
        return f"{self.actions_prefix}{account_id}"

    def account_of(self, channel: object) -> int | None:
        """The account a channel of ours names (as a subscription reports it: str or bytes); None otherwise."""
        if isinstance(channel, bytes):
            channel = channel.decode(errors="replace")
        if not isinstance(channel, str):
            return None
        for prefix in (self.prefix, self.actions_prefix):
            if channel.startswith(prefix) and channel[len(prefix) :].isdigit():
                return int(channel[len(prefix) :])
        return None

    async def ring(self, redis: Redis, account_id: int, seq: int) -> None:
        """Ring the account's doorbell with its newest seq; best effort (a failure is logged, never raised)."""
        await _publish(redis, self.channel(account_id), str(seq))

    async def ring_actions(self, redis: Redis, account_id: int) -> None:
        """Wake the executor of the account's queued actions; best effort, like `ring`."""
        await _publish(redis, self.actions_channel(account_id), "1")

    async def ring_accounts(self, redis: Redis) -> None:
        """Wake every sync process's round: an account was added, removed or given new credentials."""
        await _publish(redis, self.accounts_channel, "1")


async def _publish(redis: Redis, name: str, message: str) -> None:
    try:
        await guarded(redis, lambda: redis.publish(name, message))
    except RedisUnavailable as exc:  # Redis only rings; readers and executors fall back to polling.
        # Said once per failure; while the breaker is open (no cause), every ring would say it again.
        log.log(logging.WARNING if exc.__cause__ is not None else logging.DEBUG, "%s not rung: %s", name, exc)
