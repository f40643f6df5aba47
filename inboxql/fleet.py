"""The fleet commands: `inboxql fleet list`, `inboxql fleet drain OWNER`, `inboxql account pin ID GROUP` and
`inboxql account unpin ID` (schema.leases holds what they change; synccore.supervisor acts on it)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from schema import leases
from schema.db import create_engine
from schema.settings import Settings
from schema.unit import Store

T = TypeVar("T")


async def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        return await work(Store(engine))
    finally:
        await engine.dispose()


async def fleet_list(settings: Settings) -> int:
    """One line a sync process: owner, group, accounts held, seconds since its heartbeat, draining or live."""
    found = await _with_store(settings, leases.processes)
    for p in found:
        state = "draining" if p.draining else "live"
        print("\t".join([p.owner, p.group or "-", str(p.accounts), f"{p.heartbeat_age:.1f}", state]))
    return 0


async def fleet_drain(settings: Settings, owner: str) -> int:
    """Ask a sync process to hand its accounts over and exit 0 (at its next round, within seconds)."""

    async def drain(store: Store) -> bool:
        return await leases.drain(store, owner)

    if not await _with_store(settings, drain):
        print(f"inboxql: no sync process {owner!r} (see `inboxql fleet list`)", file=sys.stderr)
        return 2
    print(f"{owner}: draining")
    return 0


async def account_pin(settings: Settings, account_id: int, group: str | None) -> int:
    """Pin an account to the sync processes of a group (None: to those started without --group)."""

    async def pin(store: Store) -> bool:
        return await leases.pin(store, account_id, group)

    if not await _with_store(settings, pin):
        print(f"inboxql: no account {account_id}", file=sys.stderr)
        return 2
    return 0
