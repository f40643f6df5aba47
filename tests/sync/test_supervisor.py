"""One sync process runs many accounts, each under a lease that a second process cannot take."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, update

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine
from schema.migrate import upgrade
from schema.models import Account, Folder, MessagePlace, utcnow
from schema.settings import Settings
from schema.unit import Store
from synccore import supervisor as supervisor_module
from synccore.account import Tuning
from synccore.supervisor import Supervisor
from synccore.verify import verify
from tests.conftest import REDIS_URL, new_user, throwaway_database
from tests.mariadb import PrivateMariaDB
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


async def test_a_lease_is_free_once_its_holder_stops_renewing_whatever_its_name_says(
    settings: Settings, store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    """Liveness is renewal only: a holder whose name is this very (live) process still loses a lease it let
    expire, and one it renews stays its own."""
    user, password = new_user(dovecot)
    account_id = await add_account(store, credential_box, dovecot, user, password)
    alive = f"{socket.gethostname()}:{os.getpid()}:alive"
    async with store.sessions() as s, s.begin():
        await s.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(lease_owner=alive, lease_expires_at=utcnow() + timedelta(minutes=5))
        )
    supervisor = Supervisor(settings)
    try:
        assert not await supervisor.acquire(account_id)
        async with store.sessions() as s, s.begin():
            await s.execute(
                update(Account).where(Account.id == account_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        assert await supervisor.acquire(account_id)
        assert await supervisor.run_once([account_id]) == 0
    finally:
        await supervisor.close()
    async with store.sessions() as s:
        owner = await s.scalar(select(Account.lease_owner).where(Account.id == account_id))
    assert owner is None


async def test_an_account_refused_for_its_password_resumes_when_new_credentials_are_set(
    settings: Settings, store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(6, seed=67)))
    account_id = await add_account(store, credential_box, dovecot, user, "an-old-password")
    supervisor = Supervisor(settings, Tuning(poll_interval=0.5))
    task = asyncio.create_task(supervisor.run_forever([account_id]))
    try:
        async with asyncio.timeout(60):
            while (state := await _account_state(store, account_id)) != "auth_failed":
                assert state != "ready"
                await asyncio.sleep(0.1)
        # What `inboxql account set-password` calls: the same process picks the account up again (next rescan).
        await accounts.set_password(store, credential_box, account_id, password)
        async with asyncio.timeout(60):
            while await _account_state(store, account_id) != "ready":
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await supervisor.close()
    await assert_identical(store, credential_box, account_id)


async def _account_state(store: Store, account_id: int) -> str | None:
    async with store.sessions() as s:
        state: str | None = await s.scalar(select(Account.sync_state).where(Account.id == account_id))
    return state


async def test_an_account_whose_lease_another_process_took_is_let_go(
    settings: Settings,
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """E.g. after MySQL was away longer than a lease: the other process renewed first, so this one stops."""
    monkeypatch.setattr(supervisor_module, "RESCAN_SECONDS", 0.2)
    user, password = new_user(dovecot)
    account_id = await add_account(store, credential_box, dovecot, user, password)
    supervisor = Supervisor(settings, Tuning(poll_interval=0.5))
    task = asyncio.create_task(supervisor.run_forever([account_id]))
    try:
        async with asyncio.timeout(30):
            while account_id not in supervisor._tasks:
                await asyncio.sleep(0.05)
        account_task = supervisor._tasks[account_id]
        rival = f"{socket.gethostname()}:{os.getpid()}:rival"
        async with store.sessions() as s, s.begin():
            await s.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(
                    lease_owner=rival,
                    lease_expires_at=utcnow() + timedelta(minutes=5),
                    lease_epoch=Account.lease_epoch + 1,
                )
            )
        async with asyncio.timeout(30):
            while not account_task.done():
                await asyncio.sleep(0.05)
        assert account_task.cancelled()
        assert not await supervisor.acquire(account_id)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await supervisor.close()
    async with store.sessions() as s:
        assert await s.scalar(select(Account.lease_owner).where(Account.id == account_id)) == rival


INBOXQL = str(Path(sys.executable).with_name("inboxql"))


@pytest.fixture(scope="module")
def private_mariadb() -> Iterator[PrivateMariaDB]:
    """A MariaDB of this module's own, free to be stopped and started (the shared one serves other tests)."""
    server = PrivateMariaDB(Path(tempfile.mkdtemp(prefix="inboxql-mariadb-")))
    server.start()
    yield server
    server.remove()


async def _places(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        found = await s.scalar(
            select(func.count())
            .select_from(MessagePlace)
            .join(Folder, Folder.id == MessagePlace.folder_id)
            .where(Folder.account_id == account_id)
        )
    return found or 0


async def _wait_places(store: Store, account_id: int, wanted: int, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(120):
        while await _places(store, account_id) != wanted:
            assert proc.returncode is None, "inboxql sync ended"
            await asyncio.sleep(0.2)


async def test_sync_waits_out_a_mysql_restart_and_mirrors_the_mail_that_came_meanwhile(
    private_mariadb: PrivateMariaDB,
    settings: Settings,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    tmp_path: Path,
) -> None:
    url = private_mariadb.url("inboxql_restart")
    await create_database(url)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, pool_size=2)
    store = Store(engine)
    user, password = new_user(dovecot)
    mail = list(generate(25, seed=66))
    dovecot.append(user, password, "INBOX", mail[:10])
    account_id = await add_account(store, credential_box, dovecot, user, password)

    env = {
        **os.environ,
        "INBOXQL_DATABASE_URL": url,
        "INBOXQL_REDIS_URL": settings.redis_url,
        "INBOXQL_SECRET_KEY": settings.secret_key,
    }
    log_path = tmp_path / "sync.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            INBOXQL, "sync", "--account", str(account_id), "--poll-interval", "0.5", env=env, stdout=log, stderr=log
        )
    try:
        await _wait_places(store, account_id, 10, proc)

        private_mariadb.stop()  # a clean restart, as `systemctl restart mariadb` does
        dovecot.append(user, password, "INBOX", mail[10:20])
        dovecot.append(user, password, "Archive", mail[20:25])
        # Down until the supervisor has met the outage (its rescan), or the process has ended of it.
        async with asyncio.timeout(60):
            while "database unavailable" not in log_path.read_text(errors="replace") and proc.returncode is None:
                await asyncio.sleep(0.2)
        assert proc.returncode is None, log_path.read_text(errors="replace")[-3000:]
        private_mariadb.start()

        await _wait_places(store, account_id, 25, proc)
        async with asyncio.timeout(60):  # the pass that placed them may still be on its way through the folders
            while await verify(store, credential_box, account_id):
                assert proc.returncode is None
                await asyncio.sleep(0.5)
        await assert_identical(store, credential_box, account_id)
        assert proc.returncode is None
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)
        await engine.dispose()


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of its own: the process below syncs every account it finds."""
    with throwaway_database("inboxql_bell") as url:
        yield url


async def test_a_running_process_takes_a_new_account_and_lets_a_removed_one_go_at_once(
    own_database: str, dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding and removing an account ring the accounts bell (schema.doorbell): a sync process already running
    starts the new account's sync at once, and lets a removed one go at once, not at its next round (a minute
    away here, so only the bell can explain either)."""
    monkeypatch.setattr(supervisor_module, "RESCAN_SECONDS", 60)
    settings = Settings(database_url=own_database, redis_url=REDIS_URL, secret_key=secrets.token_urlsafe(32))
    box = CredentialBox(settings.secret_key)
    engine = create_engine(own_database)
    redis = Redis.from_url(REDIS_URL)
    store = Store(engine, redis)
    supervisor = Supervisor(settings, Tuning(poll_interval=0.5))
    task = asyncio.create_task(supervisor.run_forever())
    try:
        # Its first rounds are over: the one it starts with, and the one its bells' subscription asks for.
        async with asyncio.timeout(30):
            while not (await redis.pubsub_numsub(store.doorbells.accounts_channel))[0][1]:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        user, password = new_user(dovecot)
        dovecot.append(user, password, "INBOX", list(generate(5, seed=71)))
        account_id = await add_account(store, box, dovecot, user, password)
        async with asyncio.timeout(20):
            while await _account_state(store, account_id) != "ready":
                await asyncio.sleep(0.1)
        removed = await accounts.remove(store, account_id, wait_seconds=20)
        assert removed is not None
        assert removed.let_go
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await supervisor.close()
        await redis.aclose()
        await engine.dispose()
