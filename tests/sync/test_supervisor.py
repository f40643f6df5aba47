"""One sync process runs many accounts, each under a lease that a second process cannot take."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import timedelta

from sqlalchemy import select, update

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.models import Account, utcnow
from schema.settings import Settings
from schema.unit import Store
from synccore.account import Tuning
from synccore.supervisor import Supervisor
from tests.conftest import new_user
from tests.sync.support import add_account, assert_identical


async def test_one_process_follows_many_accounts(
    settings: Settings, store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    ids = []
    for n in range(3):
        user, password = new_user(dovecot)
        dovecot.append(user, password, "INBOX", list(generate(20 + n, seed=60 + n)))
        ids.append(await add_account(store, credential_box, dovecot, user, password))
    supervisor = Supervisor(settings, Tuning(poll_interval=0.5))
    task = asyncio.create_task(supervisor.run_forever(ids))
    try:
        async with asyncio.timeout(60):
            while True:
                async with store.sessions() as s:
                    states = set(await s.scalars(select(Account.sync_state).where(Account.id.in_(ids))))
                if states == {"ready"}:
                    break
                await asyncio.sleep(0.1)
        # A second process finds every account leased.
        rival = Supervisor(settings)
        try:
            assert [await rival.acquire(i) for i in ids] == [False, False, False]
        finally:
            await rival.close()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await supervisor.close()
    for account_id in ids:
        await assert_identical(store, credential_box, account_id)


async def test_a_lease_of_a_dead_process_is_taken_over_at_once(
    settings: Settings, store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    account_id = await add_account(store, credential_box, dovecot, user, password)
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()  # its pid is now free: a process that died holding the lease
    async with store.sessions() as s, s.begin():
        await s.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(
                lease_owner=f"{socket.gethostname()}:{proc.pid}:dead",
                lease_expires_at=utcnow() + timedelta(minutes=5),
            )
        )
    supervisor = Supervisor(settings)
    try:
        assert await supervisor.acquire(account_id)
        assert await supervisor.run_once([account_id]) == 0
    finally:
        await supervisor.close()
    async with store.sessions() as s:
        owner = await s.scalar(select(Account.lease_owner).where(Account.id == account_id))
    assert owner is None
