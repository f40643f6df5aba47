"""The fleet commands: `inboxql fleet list`, `inboxql fleet drain OWNER`, `inboxql account pin ID GROUP` and
`inboxql account unpin ID` (schema.leases holds what they change; synccore.supervisor acts on it).

Each shard is a lease domain of its own (schema.shards): a process is listed once per shard it serves, a drain
is asked on every shard, and a pin is written on the account's shard."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from schema import leases
from schema.redisconn import connect
from schema.settings import Settings
from schema.shards import ShardError, Shards, shard_of
from schema.unit import Store

T = TypeVar("T")


async def _on_shards(
    settings: Settings, work: Callable[[Store], Awaitable[T]], shard: int | None = None, redis: Redis | None = None
) -> list[T]:
    """`work` done on every shard in turn (or on `shard` alone), its stores ringing through `redis` if given."""
    shards = Shards.of(settings, pool_size=1)
    try:
        numbers = shards.numbers if shard is None else [shard]
        return [await work(shards.store(n, redis)) for n in numbers]
    finally:
        await shards.dispose()


async def fleet_list(settings: Settings) -> int:
    """One line a sync process: owner, group, accounts held, seconds since its heartbeat, draining or live."""
    found = [p for listed in await _on_shards(settings, leases.processes) for p in listed]
    for p in found:
        state = "draining" if p.draining else "live"
        print("\t".join([p.owner, p.group or "-", str(p.accounts), f"{p.heartbeat_age:.1f}", state]))
    return 0


async def fleet_drain(settings: Settings, owner: str) -> int:
    """Ask a sync process to hand its accounts over and exit 0 (at its next round, within seconds)."""

    async def drain(store: Store) -> bool:
        return await leases.drain(store, owner)

    if not any(await _on_shards(settings, drain)):
        print(f"inboxql: no sync process {owner!r} (see `inboxql fleet list`)", file=sys.stderr)
        return 2
    print(f"{owner}: draining")
    return 0


async def account_pin(settings: Settings, account_id: int, group: str | None) -> int:
    """Pin an account to the sync processes of a group (None: to those started without --group)."""

    async def pin(store: Store) -> bool:
        return await leases.pin(store, account_id, group)

    redis = connect(settings.redis_url)  # the accounts bell: the sync processes look at once
    try:
        pinned = await _on_shards(settings, pin, shard_of(account_id), redis)
    except ShardError as exc:
        print(f"inboxql: {exc}", file=sys.stderr)
        return 2
    finally:
        await redis.aclose()
    if not any(pinned):
        print(f"inboxql: no account {account_id}", file=sys.stderr)
        return 2
    return 0
