"""Leases: which sync process owns an account, for how long.

A lease is two columns of the account row (owner, expiry). Taking one locks the row, so two processes asking at
once get one answer; each statement runs again when InnoDB picks it as a deadlock's loser (schema.retry), which
before ended `inboxql sync`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import select, update

from schema.models import Account, utcnow
from schema.retry import retry_deadlocks
from schema.unit import Store


async def accounts(store: Store, only: Sequence[int] | None = None) -> list[Account]:
    """The accounts to sync, by id (those of `only`, when given)."""
    async with store.sessions() as s:
        query = select(Account).order_by(Account.id)
        if only:
            query = query.where(Account.id.in_(only))
        return list(await s.scalars(query))


async def acquire(store: Store, account_id: int, owner: str, seconds: float, alive: Callable[[str], bool]) -> bool:
    """Take or extend the account's lease for `owner`; False while another live owner holds it.

    A lease is free when nobody holds it, when it expired, or when `alive` says its owner is gone."""

    async def step() -> bool:
        now = utcnow()
        async with store.sessions() as s, s.begin():
            row = (
                await s.execute(
                    select(Account.lease_owner, Account.lease_expires_at)
                    .where(Account.id == account_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                return False
            holder, expires = row
            free = holder is None or holder == owner or expires is None or expires < now or not alive(holder)
            if not free:
                return False
            await s.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=seconds))
            )
            return True

    return await retry_deadlocks(step)


async def renew(store: Store, owner: str, seconds: float) -> set[int]:
    """Extend every lease `owner` holds; returns the accounts it holds (one whose lease expired and another
    process took is not among them)."""

    async def step() -> set[int]:
        async with store.sessions() as s, s.begin():
            await s.execute(
                update(Account)
                .where(Account.lease_owner == owner)
                .values(lease_expires_at=utcnow() + timedelta(seconds=seconds))
            )
            return set(await s.scalars(select(Account.id).where(Account.lease_owner == owner)))

    return await retry_deadlocks(step)


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
