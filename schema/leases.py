"""Leases: which sync process owns an account, for how long, and the fence that keeps a lost lease from writing.

A lease is three columns of the account row: its owner (a process's name, `sync_processes.owner`), its expiry and
its epoch. The epoch goes up by one each time the lease changes hands, and each hand-over is a row of
`lease_grants` (account, epoch, owner, when taken). Every time is the database's clock (UTC_TIMESTAMP), so
processes on hosts whose clocks differ agree on what expired.

Liveness comes from renewal only: a lease not renewed for its period is free, whoever held it and wherever it
ran. A process also beats in `sync_processes`, which is how the live processes of a group count each other to
take their share (synccore.supervisor) and how an operator drains one (`inboxql fleet drain`).

Fencing: a sync process writes through a FencedStore, which knows the epoch of every lease it holds. Each unit of
work checks, in its own transaction just before it commits, that the account's epoch is still the one it was
given (the account row read LOCK IN SHARE MODE, so a hand-over waits for the commit or the commit sees the
hand-over), and counts the commit on its grant's row. A unit whose lease was lost or taken is rolled back with
LeaseLost: a process paused past its lease (SIGSTOP, a long GC, a dead network) writes nothing when it wakes up.
So one epoch's commits all end before the next epoch is taken (`lease_grants.last_commit_at` < the next
`taken_at`), which is what the fleet test reads.

A paused process may be paused in the middle of a transaction, holding row locks (of the account row, its change
counter, its messages) that would keep its accounts from being taken over or written by their new holder. So the
sync process's connections ask MariaDB to end a transaction left idle for the lease period
(`idle_transaction_timeout`, end_idle_transactions): the locks of a paused process go when its leases do.

Each statement runs again when InnoDB picks it as a deadlock's loser (schema.retry).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from redis.asyncio import Redis
from sqlalchemy import (
    ColumnElement,
    Select,
    Update,
    delete,
    event,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.mysql import Insert
from sqlalchemy.dialects.mysql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from schema.doorbell import Doorbells
from schema.models import Account, LeaseGrant, SyncProcess
from schema.retry import retry_deadlocks
from schema.unit import Store, UnitOfWork

log = logging.getLogger(__name__)

# A process row whose heartbeat is this old is deleted (the process is long gone; its leases expired long ago).
FORGET_SECONDS = 3600


class LeaseLost(Exception):
    """A unit of work was refused: the account's lease is no longer this process's (`held` was its epoch)."""

    def __init__(self, account_id: int, held: int | None, current: int | None) -> None:
        super().__init__(f"account {account_id}: lease epoch {held} lost (now {current}); the write was refused")
        self.account_id = account_id
        self.held = held
        self.current = current


class FencedStore(Store):
    """A sync process's store: a unit of work commits only under a lease this process still holds (see above).

    `held` maps account id to the epoch of its lease; the supervisor keeps it. `refused` is called with the
    account id after a refusal was rolled back (the supervisor stops that account's task)."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis | None,
        refused: Callable[[int], None],
        doorbells: Doorbells | None = None,
    ) -> None:
        super().__init__(engine, redis, doorbells)
        self.held: dict[int, int] = {}
        self.refusals = 0
        self._refused = refused

    async def fence(self, uow: UnitOfWork) -> None:
        epoch = self.held.get(uow.account_id)
        current = await _epoch_locked(uow.session, uow.account_id)
        if epoch is None or current != epoch:
            self.refusals += 1
            log.warning(
                "account %s: write refused: lease epoch %s is no longer this process's (now %s)",
                uow.account_id,
                epoch,
                current,
            )
            self.held.pop(uow.account_id, None)
            self._refused(uow.account_id)
            raise LeaseLost(uow.account_id, epoch, current)
        await uow.session.execute(
            update(LeaseGrant)
            .where(LeaseGrant.account_id == uow.account_id, LeaseGrant.epoch == epoch)
            .values(commits=LeaseGrant.commits + 1, last_commit_at=_now())
        )


async def _epoch_locked(session: AsyncSession, account_id: int) -> int | None:
    epoch: int | None = await session.scalar(
        select(Account.lease_epoch).where(Account.id == account_id).with_for_update(read=True)
    )
    return epoch


def end_idle_transactions(engine: AsyncEngine, seconds: float) -> None:
    """Have the server end any transaction of this engine's connections idle for `seconds` (MariaDB's
    idle_transaction_timeout; a server without it, such as MySQL, is told so in the log and left as it is)."""

    @event.listens_for(engine.sync_engine, "connect")
    def limit(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        try:
            cursor.execute(f"SET SESSION idle_transaction_timeout = {max(1, int(seconds))}")
        except Exception as exc:  # the driver's own class of error: an unknown variable
            log.warning("idle transactions are not ended by this server: %s", exc)
        finally:
            cursor.close()


def _now() -> ColumnElement[datetime]:
    return func.utc_timestamp(6)


def _after(seconds: float) -> ColumnElement[datetime]:
    return func.timestampadd(literal_column("MICROSECOND"), int(seconds * 1_000_000), func.utc_timestamp(6))


def _free() -> ColumnElement[bool]:
    return (Account.lease_owner.is_(None)) | (Account.lease_expires_at.is_(None)) | (Account.lease_expires_at < _now())


async def forget_grants(session: AsyncSession, before: datetime) -> int:
    """Delete the hand-overs taken before `before`, but each account's current one; how many went."""
    current = select(Account.lease_epoch).where(Account.id == LeaseGrant.account_id).scalar_subquery()
    result = await session.execute(delete(LeaseGrant).where(LeaseGrant.taken_at < before, LeaseGrant.epoch < current))
    return int(getattr(result, "rowcount", 0) or 0)


class Listed(NamedTuple):
    """What a sync process's round needs of an account: not the whole row (with its sealed credentials), which
    cost 1,000 accounts about 12 ms of CPU a round as ORM objects, against 2 ms so."""

    id: int
    sync_state: str
    lease_group: str | None


async def accounts(store: Store, only: Sequence[int] | None = None) -> list[Listed]:
    """The accounts to sync, by id (those of `only`, when given)."""
    async with store.sessions() as s:
        return await listed(s, only)


async def listed(s: AsyncSession, only: Sequence[int] | None = None) -> list[Listed]:
    """`accounts`, in a session of the caller's."""
    query = select(Account.id, Account.sync_state, Account.lease_group).order_by(Account.id)
    if only:
        query = query.where(Account.id.in_(only))
    return [Listed(*row) for row in await s.execute(query)]


async def _hand_over(s: AsyncSession, ids: list[int], owner: str, seconds: float) -> dict[int, int]:
    """Give these (locked, free) accounts' leases to `owner` with a new epoch each; returns their epochs."""
    if not ids:
        return {}
    await s.execute(
        update(Account)
        .where(Account.id.in_(ids))
        .values(lease_owner=owner, lease_expires_at=_after(seconds), lease_epoch=Account.lease_epoch + 1)
    )
    # A statement of its own after the rows are locked: its clock reads after the previous holder's last commit.
    await s.execute(
        insert(LeaseGrant).from_select(
            ["account_id", "epoch", "owner", "taken_at"],
            select(Account.id, Account.lease_epoch, literal(owner), _now()).where(Account.id.in_(ids)),
        )
    )
    epochs = {i: e for i, e in await s.execute(select(Account.id, Account.lease_epoch).where(Account.id.in_(ids)))}
    return epochs


async def acquire(store: Store, account_id: int, owner: str, seconds: float) -> int | None:
    """Take or extend the account's lease for `owner`: its epoch, or None while another owner's lease runs."""

    async def step() -> int | None:
        async with store.sessions() as s, s.begin():
            row = (
                await s.execute(
                    select(Account.lease_owner, _free(), Account.lease_epoch)
                    .where(Account.id == account_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            holder, free, epoch = row
            if holder == owner:
                await s.execute(
                    update(Account).where(Account.id == account_id).values(lease_expires_at=_after(seconds))
                )
                return int(epoch)
            if not free:
                return None
            return (await _hand_over(s, [account_id], owner, seconds))[account_id]

    return await retry_deadlocks(step)


async def claim(store: Store, owner: str, candidates: Sequence[int], seconds: float, limit: int) -> dict[int, int]:
    """Take up to `limit` of the candidates whose lease is free, picked at random, skipping rows another process
    is taking at this moment (so processes that start together do not queue on the same rows); their epochs."""
    if not candidates or limit <= 0:
        return {}

    async def step() -> dict[int, int]:
        async with store.sessions() as s, s.begin():
            ids = list(
                await s.scalars(
                    select(Account.id)
                    .where(Account.id.in_(list(candidates)), _free())
                    .order_by(func.rand())
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            return await _hand_over(s, ids, owner, seconds)

    return await retry_deadlocks(step)


async def renew(store: Store, owner: str, seconds: float) -> dict[int, int]:
    """Extend every lease `owner` holds; returns the accounts it holds with their epochs (one whose lease
    expired and another process took is not among them)."""

    async def step() -> dict[int, int]:
        async with store.sessions() as s, s.begin():
            return await _renew(s, owner, seconds)

    return await retry_deadlocks(step)


async def _renew(s: AsyncSession, owner: str, seconds: float) -> dict[int, int]:
    extend, read = _renewal(owner, seconds)
    await s.execute(extend)
    return {i: e for i, e in await s.execute(read)}


# A process renews (and beats) with the same statements every round: built once, not every 2 s (building them
# cost a round about a fifth of its CPU; bench.empty_idle_bench).
@functools.lru_cache(maxsize=64)
def _renewal(owner: str, seconds: float) -> tuple[Update, Select[int, int]]:
    return (
        update(Account).where(Account.lease_owner == owner).values(lease_expires_at=_after(seconds)),
        select(Account.id, Account.lease_epoch).where(Account.lease_owner == owner),
    )


@functools.lru_cache(maxsize=64)
def _beat(owner: str, group: str | None, seconds: float) -> tuple[Insert, Select[bool, int]]:
    live = (
        select(func.count())
        .select_from(SyncProcess)
        .where(
            SyncProcess.group_name.is_not_distinct_from(group),
            SyncProcess.heartbeat_at > _after(-seconds),
            SyncProcess.draining.is_(False),
        )
        .scalar_subquery()
    )
    return (
        upsert(SyncProcess)
        .values(owner=owner, group_name=group, started_at=_now(), heartbeat_at=_now())
        .on_duplicate_key_update(heartbeat_at=_now()),
        select(SyncProcess.draining, live).where(SyncProcess.owner == owner),
    )


async def release(store: Store, owner: str, ids: Sequence[int]) -> None:
    """Give up `owner`'s leases of these accounts (a lease another process took meanwhile stays its own)."""
    if not ids:
        return

    async def step() -> None:
        async with store.sessions() as s, s.begin():
            await s.execute(
                update(Account)
                .where(Account.id.in_(list(ids)), Account.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    await retry_deadlocks(step)


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat learns: whether an operator asked this process to drain, how many live processes (this
    one included, draining ones not) serve its group, and the leases the beat renewed, with their epochs."""

    draining: bool
    live: int
    held: dict[int, int]


async def heartbeat(store: Store, owner: str, group: str | None, seconds: float, *, forget: bool = True) -> Beat:
    """Record that `owner` is alive and renew every lease it holds for `seconds` (as `renew`), in one transaction
    (a sync process's round, synccore.supervisor, costs one round trip per statement and a commit per transaction,
    and a ping when its connection sat idle a second (schema.db): the beat and the renewal were two). A process is
    live while its last beat is younger than `seconds`. With `forget`, rows of processes silent for FORGET_SECONDS
    go too (a round asks it once a minute, not every time)."""
    beat, read = _beat(owner, group, seconds)

    async def step() -> Beat:
        async with store.sessions() as s, s.begin():
            await s.execute(beat)
            if forget:
                await s.execute(delete(SyncProcess).where(SyncProcess.heartbeat_at < _after(-FORGET_SECONDS)))
            held = await _renew(s, owner, seconds)
            row = (await s.execute(read)).one()
            return Beat(bool(row[0]), int(row[1] or 0), held)

    return await retry_deadlocks(step)


async def leave(store: Store, owner: str) -> None:
    """The process ends: its row goes (its leases were released first)."""

    async def step() -> None:
        async with store.sessions() as s, s.begin():
            await s.execute(delete(SyncProcess).where(SyncProcess.owner == owner))

    await retry_deadlocks(step)


async def drain(store: Store, owner: str) -> bool:
    """Ask the process `owner` to hand its accounts over and exit; False when no such process is registered."""
    async with store.sessions() as s, s.begin():
        found = await s.execute(update(SyncProcess).where(SyncProcess.owner == owner).values(draining=True))
        return bool(getattr(found, "rowcount", 0))


async def pin(store: Store, account_id: int, group: str | None) -> bool:
    """Pin the account to a process group (None: any process without a group); False when there is no such
    account. The accounts bell rings (with the store's Redis): its holder, if of another group, lets it go at once,
    and the group's processes take it; without a ring, within a few rounds (synccore.supervisor.LIST_ROUNDS)."""
    async with store.sessions() as s, s.begin():
        found = await s.execute(update(Account).where(Account.id == account_id).values(lease_group=group))
        pinned = bool(getattr(found, "rowcount", 0))
    if pinned and store.redis is not None:
        await store.doorbells.ring_accounts(store.redis)
    return pinned


@dataclass(frozen=True, slots=True)
class Process:
    owner: str
    group: str | None
    started_at: datetime
    heartbeat_age: float  # seconds since its last beat
    draining: bool
    accounts: int  # leases it holds that have not expired


async def processes(store: Store) -> list[Process]:
    """The registered sync processes, oldest first."""
    async with store.sessions() as s:
        counted = await s.execute(
            select(Account.lease_owner, func.count())
            .where(Account.lease_owner.is_not(None), Account.lease_expires_at >= _now())
            .group_by(Account.lease_owner)
        )
        held: dict[str | None, int] = {owner: n for owner, n in counted}
        rows = await s.execute(
            select(
                SyncProcess.owner,
                SyncProcess.group_name,
                SyncProcess.started_at,
                func.timestampdiff(literal_column("MICROSECOND"), SyncProcess.heartbeat_at, _now()),
                SyncProcess.draining,
            ).order_by(SyncProcess.started_at, SyncProcess.owner)
        )
        return [
            Process(owner, group, started, (age or 0) / 1_000_000, bool(draining), held.get(owner, 0))
            for owner, group, started, age, draining in rows
        ]
