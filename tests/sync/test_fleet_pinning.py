"""Pinning: `inboxql account pin ID GROUP` puts an account on the sync processes of that group only
(`inboxql sync --group GROUP`), `unpin` gives it back to those without a group; `fleet list` shows them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from inboxql.devmail import DovecotServer
from schema import accounts
from schema.crypto import CredentialBox
from schema.models import Account
from schema.settings import Settings
from schema.unit import Store
from synccore import supervisor as supervisor_module
from synccore.account import Tuning
from synccore.supervisor import Supervisor
from tests.conftest import new_user
from tests.sync.support import add_account

INBOXQL = str(Path(sys.executable).with_name("inboxql"))


async def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "INBOXQL_DATABASE_URL": settings.database_url,
        "INBOXQL_REDIS_URL": settings.redis_url,
        "INBOXQL_SECRET_KEY": settings.secret_key,
    }
    proc = await asyncio.create_subprocess_exec(
        INBOXQL, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def _holder(store: Store, account_id: int) -> str | None:
    async with store.sessions() as s:
        owner: str | None = await s.scalar(select(Account.lease_owner).where(Account.id == account_id))
    return owner


async def test_a_pinned_account_is_synced_by_its_group_only_and_unpinned_goes_back(
    settings: Settings,
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "RESCAN_SECONDS", 0.3)
    ids = []
    for _ in range(2):
        user, password = new_user(dovecot)
        ids.append(await add_account(store, credential_box, dovecot, user, password))
    pinned, free = ids
    assert await _cli(settings, "account", "pin", str(pinned), "eu") == (0, "")
    assert (await _cli(settings, "account", "pin", "999999999", "eu"))[0] == 2
    assert (await _cli(settings, "account", "pin", str(pinned), " eu"))[0] == 2  # a group has no outer spaces

    plain = Supervisor(settings, Tuning(poll_interval=0.5))
    eu = Supervisor(settings, Tuning(poll_interval=0.5), group="eu")
    tasks = [asyncio.create_task(s.run_forever(ids)) for s in (plain, eu)]
    try:
        async with asyncio.timeout(60):
            while (await _holder(store, pinned), await _holder(store, free)) != (eu.owner, plain.owner):
                await asyncio.sleep(0.1)
        code, listing = await _cli(settings, "fleet", "list")
        assert code == 0, listing
        lines = {line.split("\t")[0]: line.split("\t") for line in listing.splitlines()}
        assert lines[eu.owner][1:3] == ["eu", "1"]
        assert lines[plain.owner][1:3] == ["-", "1"]

        assert await _cli(settings, "account", "unpin", str(pinned)) == (0, "")
        async with asyncio.timeout(60):
            while await _holder(store, pinned) != plain.owner:
                await asyncio.sleep(0.1)
        assert pinned not in eu.store.held
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await plain.close()
        await eu.close()


async def test_a_drained_process_hands_its_accounts_over_and_returns(
    settings: Settings,
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "RESCAN_SECONDS", 0.3)
    user, password = new_user(dovecot)
    account_id = await add_account(store, credential_box, dovecot, user, password)
    first = Supervisor(settings, Tuning(poll_interval=0.5))
    task = asyncio.create_task(first.run_forever([account_id]))
    try:
        async with asyncio.timeout(60):
            while await _holder(store, account_id) != first.owner:
                await asyncio.sleep(0.1)
        assert await _cli(settings, "fleet", "drain", first.owner) == (0, f"{first.owner}: draining\n")
        async with asyncio.timeout(60):
            await task  # run_forever returns: `inboxql sync` exits 0
        assert await _holder(store, account_id) is None
        assert (await _cli(settings, "fleet", "drain", first.owner))[0] == 2  # gone from the fleet
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await first.close()


async def test_a_pin_rings_the_accounts_bell(
    settings: Settings, store: Store, credential_box: CredentialBox, redis: Redis
) -> None:
    """A running process reads the account list when the bell rings, else only every few rounds: `account pin`
    rings it, as adding or removing an account does, so the holder lets go at once."""
    endpoint = accounts.ImapEndpoint("127.0.0.1", 1, "none", "nobody")
    account_id = await accounts.create(store, credential_box, "pinned-bell@example.test", endpoint, "pw")
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.doorbells.accounts_channel)
    try:
        assert await pubsub.get_message(timeout=1.0) is None  # the subscription's confirmation, left out
        assert await _cli(settings, "account", "pin", str(account_id), "eu") == (0, "")
        async with asyncio.timeout(10):
            while (message := await pubsub.get_message(timeout=1.0)) is None:
                pass
        assert message["channel"] in (store.doorbells.accounts_channel, store.doorbells.accounts_channel.encode())
    finally:
        await pubsub.aclose()
