"""Fencing: a unit of work of a sync process commits only under the lease epoch it was given (schema.leases)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from inboxql.devmail import DovecotServer
from schema import leases
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.models import Account, ChangeLog, Label, LeaseGrant, utcnow
from schema.unit import Store
from tests.conftest import new_user
from tests.sync.support import add_account


async def _account(store: Store, box: CredentialBox, dovecot: DovecotServer) -> int:
    user, password = new_user(dovecot)
    return await add_account(store, box, dovecot, user, password)


async def _expire(store: Store, account_id: int) -> None:
    async with store.sessions() as s, s.begin():
        await s.execute(
            update(Account).where(Account.id == account_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


async def _write(store: Store, account_id: int, error: str) -> None:
    """A unit that changes the account row and logs it, as the sync core's units do with the mirror."""
    async with store.unit(account_id) as uow:
        await uow.session.execute(update(Account).where(Account.id == account_id).values(sync_error=error))
        uow.record(ObjectType.ACCOUNT, Op.UPDATE, [account_id])


async def _write_after_takeover(fenced: leases.FencedStore, store: Store, account_id: int) -> None:
    """A unit of the holder that was paused mid-way (SIGSTOP) while another process took its lease over."""
    async with fenced.unit(account_id) as uow:
        await _expire(store, account_id)
        assert await leases.acquire(store, account_id, "rival:2:bb", 10) == fenced.held[account_id] + 1
        uow.session.add(Label(account_id=account_id, name="written after the lease moved"))
        uow.record(ObjectType.ACCOUNT, Op.UPDATE, [account_id])


async def _logged(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        return len(list(await s.scalars(select(ChangeLog.seq).where(ChangeLog.account_id == account_id))))


async def test_a_unit_whose_lease_was_taken_while_it_ran_is_refused_and_writes_nothing(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account_id = await _account(store, credential_box, dovecot)
    lost: list[int] = []
    fenced = leases.FencedStore(store.engine, None, lost.append)
    epoch = await leases.acquire(fenced, account_id, "paused:1:aa", 10)
    assert epoch is not None
    fenced.held[account_id] = epoch
    await _write(fenced, account_id, "written under the lease")
    before = await _logged(store, account_id)

    with pytest.raises(leases.LeaseLost) as refused:
        await _write_after_takeover(fenced, store, account_id)
    assert (refused.value.held, refused.value.current) == (epoch, epoch + 1)
    assert lost == [account_id]
    assert fenced.refusals == 1
    assert account_id not in fenced.held
    async with store.sessions() as s:
        account = await s.get(Account, account_id)
        assert account is not None
        assert account.sync_error == "written under the lease"
        assert account.lease_owner == "rival:2:bb"
        assert list(await s.scalars(select(Label.name).where(Label.account_id == account_id))) == []
    assert await _logged(store, account_id) == before
    # Nor does the next unit of the old holder commit.
    with pytest.raises(leases.LeaseLost):
        await _write(fenced, account_id, "a later try")
    assert await _logged(store, account_id) == before


async def test_each_epoch_counts_its_commits_and_ends_before_the_next_is_taken(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account_id = await _account(store, credential_box, dovecot)
    first = leases.FencedStore(store.engine, None, lambda _: None)
    second = leases.FencedStore(store.engine, None, lambda _: None)
    for fenced, owner in ((first, "one:1:aa"), (second, "two:2:bb")):
        epoch = await leases.acquire(fenced, account_id, owner, 10)
        assert epoch is not None
        fenced.held[account_id] = epoch
        for n in range(3):
            await _write(fenced, account_id, f"{owner} {n}")
        await _expire(store, account_id)
    async with store.sessions() as s:
        grants = list(await s.scalars(select(LeaseGrant).where(LeaseGrant.account_id == account_id)))
    assert [(g.epoch, g.owner, g.commits) for g in grants] == [(1, "one:1:aa", 3), (2, "two:2:bb", 3)]
    assert grants[0].last_commit_at is not None
    assert grants[0].last_commit_at < grants[1].taken_at


async def test_a_lease_is_extended_by_its_holder_without_a_new_epoch_and_free_only_once_expired(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account_id = await _account(store, credential_box, dovecot)
    assert await leases.acquire(store, account_id, "one:1:aa", 10) == 1
    assert await leases.acquire(store, account_id, "one:1:aa", 10) == 1
    assert await leases.acquire(store, account_id, "two:2:bb", 10) is None
    assert await leases.renew(store, "one:1:aa", 10) == {account_id: 1}
    await _expire(store, account_id)
    assert await leases.claim(store, "two:2:bb", [account_id], 10, 5) == {account_id: 2}
    assert await leases.renew(store, "one:1:aa", 10) == {}


async def test_the_heartbeat_renews_the_holders_leases_in_its_own_transaction(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    """A round's heartbeat is also its renewal (one transaction, not two): it extends every lease of its
    process, says which with their epochs, and leaves another process's lease and an expired one taken over alone."""
    mine, taken = await _account(store, credential_box, dovecot), await _account(store, credential_box, dovecot)
    assert await leases.acquire(store, mine, "one:1:aa", 10) == 1
    assert await leases.acquire(store, taken, "one:1:aa", 10) == 1
    await _expire(store, mine)
    await _expire(store, taken)
    assert await leases.claim(store, "two:2:bb", [taken], 10, 5) == {taken: 2}

    beat = await leases.heartbeat(store, "one:1:aa", None, 10, forget=False)
    assert beat.held == {mine: 1}
    assert await leases.acquire(store, mine, "two:2:bb", 10) is None  # renewed: not free for another process
    await leases.release(store, "one:1:aa", [mine])
    await leases.release(store, "two:2:bb", [taken])
    await leases.leave(store, "one:1:aa")  # the beat's process row: other tests count the live processes


async def test_old_hand_overs_are_forgotten_but_the_current_one_stays(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account_id = await _account(store, credential_box, dovecot)
    for owner in ("one:1:aa", "two:2:bb", "three:3:cc"):
        assert await leases.acquire(store, account_id, owner, 10) is not None
        await _expire(store, account_id)
    async with store.sessions() as s, s.begin():
        assert await leases.forget_grants(s, utcnow() + timedelta(minutes=1)) >= 2
    async with store.sessions() as s:
        kept = list(await s.scalars(select(LeaseGrant.owner).where(LeaseGrant.account_id == account_id)))
    assert kept == ["three:3:cc"]
