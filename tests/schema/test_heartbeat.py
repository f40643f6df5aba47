"""The sync processes' heartbeat (schema.leases.heartbeat): one row per live process, the live count of a group,
the drain request, and the rows of processes silent for an hour forgotten when the round asks."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from schema import leases
from schema.models import SyncProcess, utcnow
from schema.unit import Store


async def _owners(store: Store) -> set[str]:
    async with store.sessions() as s:
        return set(await s.scalars(select(SyncProcess.owner)))


async def test_a_heartbeat_counts_the_live_and_forgets_the_long_silent_only_when_asked(store: Store) -> None:
    long_ago = utcnow() - timedelta(seconds=leases.FORGET_SECONDS + 60)
    async with store.sessions() as s, s.begin():
        s.add(SyncProcess(owner="silent", group_name=None, started_at=long_ago, heartbeat_at=long_ago))
        s.add(SyncProcess(owner="busy", group_name=None, started_at=utcnow(), heartbeat_at=utcnow()))
        s.add(SyncProcess(owner="other-group", group_name="g", started_at=utcnow(), heartbeat_at=utcnow()))

    beat = await leases.heartbeat(store, "me", None, 10, forget=False)
    assert beat == leases.Beat(draining=False, live=2, held={})  # me and busy: not the silent one, not another group's
    assert await _owners(store) == {"silent", "busy", "other-group", "me"}

    async with store.sessions() as s, s.begin():
        row = await s.get(SyncProcess, "me")
        assert row is not None
        row.draining = True
    beat = await leases.heartbeat(store, "me", None, 10, forget=True)
    assert beat == leases.Beat(draining=True, live=1, held={})  # a draining process is not counted among the live
    assert await _owners(store) == {"busy", "other-group", "me"}
