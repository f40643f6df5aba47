"""The sync processes' heartbeat (schema.leases.heartbeat): one row per live process, the live count of a group,
the drain request, and the rows of processes silent for an hour forgotten when the round asks."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from schema import leases
from schema.models import SyncProcess, utcnow
from schema.unit import Store


async def _owners(store: Store, names: set[str]) -> set[str]:
    """Which of `names` have a row (other tests' sync processes have theirs in the shared database)."""
    async with store.sessions() as s:
        return set(await s.scalars(select(SyncProcess.owner).where(SyncProcess.owner.in_(names))))


async def test_a_heartbeat_counts_the_live_and_forgets_the_long_silent_only_when_asked(store: Store) -> None:
    # A group of this test's own: the live count is the group's, whatever other tests' processes left behind.
    group = f"heartbeat-{uuid.uuid4().hex[:8]}"
    names = {f"{group}-{n}" for n in ("silent", "busy", "other-group", "me")}
    silent, busy, other, me = (f"{group}-{n}" for n in ("silent", "busy", "other-group", "me"))
    long_ago = utcnow() - timedelta(seconds=leases.FORGET_SECONDS + 60)
    async with store.sessions() as s, s.begin():
        s.add(SyncProcess(owner=silent, group_name=group, started_at=long_ago, heartbeat_at=long_ago))
        s.add(SyncProcess(owner=busy, group_name=group, started_at=utcnow(), heartbeat_at=utcnow()))
        s.add(SyncProcess(owner=other, group_name=f"{group}-g", started_at=utcnow(), heartbeat_at=utcnow()))

    beat = await leases.heartbeat(store, me, group, 10, forget=False)
    assert beat == leases.Beat(draining=False, live=2, held={})  # me and busy: not the silent one, not another group's
    assert await _owners(store, names) == {silent, busy, other, me}

    async with store.sessions() as s, s.begin():
        row = await s.get(SyncProcess, me)
        assert row is not None
        row.draining = True
    beat = await leases.heartbeat(store, me, group, 10, forget=True)
    assert beat == leases.Beat(draining=True, live=1, held={})  # a draining process is not counted among the live
    assert await _owners(store, names) == {busy, other, me}
