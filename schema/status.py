"""What an operator sees of the sync: every account with its state, lease, last error, change-log head, webhook
health, and each folder's progress as "x of N messages".

One read serves every view of it: the gateway's status page and its JSON (gateway.status), `inboxql status`, and
the progress bars of `inboxql sync --once` (inboxql.progress). They read the rows the sync core writes (x: the
folder's mirrored count, `total_count`; N: the server's, `server_count`, recorded from STATUS or SELECT before
the first batch), so a view never needs the sync process, only MySQL. A snapshot costs four queries whatever the
number of accounts (five with webhooks): no query per account or folder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from schema import webhooks
from schema.db import session_factory
from schema.models import Account, ChangeSeq, Folder, utcnow
from schema.shards import shard_of


@dataclass(frozen=True, slots=True)
class FolderProgress:
    id: int
    name: str
    role: str | None
    sync_state: str  # initial | follow | resync | deleting
    mirrored: int  # messages the mirror holds in it
    server_count: int | None  # what the server said it holds; None until it was asked
    sync_error: str | None
    sync_error_at: datetime | None
    synced_at: datetime | None

    @property
    def progress(self) -> str:
        return progress_text(self.mirrored, self.server_count)


@dataclass(frozen=True, slots=True)
class AccountStatus:
    id: int
    address: str
    sync_state: str
    sync_error: str | None
    sync_error_at: datetime | None
    lease_holder: str | None  # host:pid:nonce of the sync process (schema.leases); None: nobody syncs it
    lease_expires_at: datetime | None
    change_log_head: int  # the newest seq of the account's change log (0: nothing logged yet)
    folders: tuple[FolderProgress, ...]
    webhooks: tuple[webhooks.Health, ...]

    @property
    def mirrored(self) -> int:
        return sum(f.mirrored for f in self.folders)

    @property
    def server_count(self) -> int | None:
        """The account's N: None while a folder's count is unknown (the sum would claim a false end)."""
        counts = [f.server_count for f in self.folders]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    @property
    def progress(self) -> str:
        return progress_text(self.mirrored, self.server_count)

    def lease_live(self, now: datetime) -> bool:
        return self.lease_holder is not None and self.lease_expires_at is not None and self.lease_expires_at > now

    @property
    def failing_webhooks(self) -> int:
        return sum(1 for h in self.webhooks if h.failing)


def progress_text(mirrored: int, server_count: int | None) -> str:
    """ "250 of 1,000" ("250 of ?" before the server was asked)."""
    return f"{mirrored:,} of {server_count:,}" if server_count is not None else f"{mirrored:,} of ?"


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    accounts: tuple[AccountStatus, ...]


async def snapshot(session: AsyncSession, only: Sequence[int] | None = None) -> Snapshot:
    """Every account (those of `only`, when given) by id, folders by role then name (the order the sync takes)."""
    # Columns, not ORM objects: no identity map or per-object bookkeeping for thousands of folder rows (a third of
    # the time with 6,000 folders), and never an account's sealed credentials.
    query = select(
        Account.id,
        Account.address,
        Account.sync_state,
        Account.sync_error,
        Account.sync_error_at,
        Account.lease_owner,
        Account.lease_expires_at,
    ).order_by(Account.id)
    if only:
        query = query.where(Account.id.in_(list(only)))
    rows = list(await session.execute(query))
    ids = [a.id for a in rows]
    folders: dict[int, list[FolderProgress]] = {i: [] for i in ids}
    heads: dict[int, int] = {}
    hooks: dict[int, list[webhooks.Health]] = {i: [] for i in ids}
    if ids:
        folder_rows = await session.execute(
            select(
                Folder.account_id,
                Folder.id,
                Folder.name,
                Folder.role,
                Folder.sync_state,
                Folder.total_count,
                Folder.server_count,
                Folder.sync_error,
                Folder.sync_error_at,
                Folder.synced_at,
            ).where(Folder.account_id.in_(ids))
        )
        for account_id, *values in folder_rows:
            folders[account_id].append(FolderProgress(*values))
        seqs = await session.execute(
            select(ChangeSeq.account_id, ChangeSeq.last_seq).where(ChangeSeq.account_id.in_(ids))
        )
        heads = {account_id: last_seq for account_id, last_seq in seqs}
        for h in await webhooks.health(session, ids):
            hooks[h.account_id].append(h)
    return Snapshot(
        utcnow(),
        tuple(
            AccountStatus(
                id=a.id,
                address=a.address,
                sync_state=a.sync_state,
                sync_error=a.sync_error,
                sync_error_at=a.sync_error_at,
                lease_holder=a.lease_owner,
                lease_expires_at=a.lease_expires_at,
                change_log_head=heads.get(a.id, 0),
                folders=tuple(sorted(folders[a.id], key=_folder_order)),
                webhooks=tuple(hooks[a.id]),
            )
            for a in rows
        ),
    )


@dataclass(frozen=True, slots=True)
class ShardedSnapshot:
    snapshot: Snapshot
    unavailable: tuple[int, ...]  # the shards that could not be read: their accounts are missing


async def snapshot_shards(engines: Mapping[int, AsyncEngine], only: Sequence[int] | None = None) -> ShardedSnapshot:
    """Every shard's snapshot (schema.shards), the accounts by id; a shard whose server cannot be reached is named
    in `unavailable` and the others are shown. On a single server: `snapshot`, its errors raised as ever."""
    if len(engines) == 1:
        [engine] = engines.values()
        async with session_factory(engine)() as session:
            return ShardedSnapshot(await snapshot(session, only), ())
    found: list[AccountStatus] = []
    down: list[int] = []
    for number, engine in sorted(engines.items()):
        wanted = [a for a in only if shard_of(a) == number] if only else None
        if only and not wanted:
            continue
        try:
            async with session_factory(engine)() as session:
                found += (await snapshot(session, wanted)).accounts
        except (OperationalError, InterfaceError, OSError):
            down.append(number)
    return ShardedSnapshot(Snapshot(utcnow(), tuple(found)), tuple(down))


_ROLE_ORDER = {"inbox": 0, "trash": 2, "junk": 2, "all": 3}


def _folder_order(f: FolderProgress) -> tuple[int, str]:
    return _ROLE_ORDER.get(f.role or "", 1), f.name


__all__ = ["AccountStatus", "FolderProgress", "Snapshot", "progress_text", "snapshot"]
