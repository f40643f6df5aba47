"""One sync process serves the accounts of two shards, each on a MariaDB server of its own: both shards' accounts
sync and verify identical; one server stopped stops only its accounts (the other shard's new mail still arrives),
and they resume when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from inboxql import commands
from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.models import Folder, MessagePlace
from schema.settings import Settings
from schema.shards import Shards, shard_of
from schema.unit import Store
from synccore.account import Tuning
from synccore.supervisor import Supervisor
from tests.conftest import REDIS_URL, new_user
from tests.mariadb import PrivateMariaDB
from tests.schema.support import next_ids


@pytest.fixture(scope="module")
def two_servers() -> Iterator[tuple[PrivateMariaDB, PrivateMariaDB]]:
    """Two MariaDB servers of this module's own, free to be stopped and started."""
    servers = tuple(PrivateMariaDB(Path(tempfile.mkdtemp(prefix="inboxql-shard-"))) for _ in range(2))
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
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


async def _wait_places(shards: Shards, wanted: dict[int, int], running: asyncio.Task[None]) -> None:
    async with asyncio.timeout(120):
        while True:
            found = {i: await _places(shards.store_of(i), i) for i in wanted}
            if found == wanted:
                return
            assert not running.done(), "the sync process ended"
            await asyncio.sleep(0.2)


async def _verified(settings: Settings, account_id: int, running: asyncio.Task[None]) -> None:
    """`inboxql verify` says identical (the pass that placed the last messages may still be on its way)."""
    async with asyncio.timeout(60):
        while await commands.verify(settings, account_id) != 0:
            assert not running.done(), "the sync process ended"
            await asyncio.sleep(0.5)


@pytest.mark.hang_seconds(400)
async def test_one_process_syncs_two_shards_and_one_shard_down_stops_only_its_accounts(
    two_servers: tuple[PrivateMariaDB, PrivateMariaDB], dovecot: DovecotServer, capsys: pytest.CaptureFixture[str]
) -> None:
    home, other = two_servers
    name = f"inboxql_shards_{secrets.token_hex(4)}"
    settings = Settings(
        database_url=home.url(name),
        redis_url=REDIS_URL,
        secret_key=secrets.token_urlsafe(32),
        shards=((1, other.url(name)),),
    )
    assert await commands.db_upgrade(settings) == 0
    box = CredentialBox(settings.secret_key)
    shards = Shards.of(settings, pool_size=2)
    mail = list(generate(40, seed=88))
    users = {}
    for n in range(4):
        user, password = new_user(dovecot)
        dovecot.append(user, password, "INBOX", mail[n * 10 : n * 10 + 6])
        shard = await accounts.place(shards)
        endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
        account_id = await accounts.create(
            shards.store(shard), box, f"{user}@example.test", endpoint, password, shard=shard
        )
        users[account_id] = (user, password, n)
    on = {s: [i for i in users if shard_of(i) == s] for s in (0, 1)}
    assert [len(on[0]), len(on[1])] == [2, 2]

    supervisor = Supervisor(settings, Tuning(poll_interval=0.5))
    running = asyncio.create_task(supervisor.run_forever())
    try:
        await _wait_places(shards, dict.fromkeys(users, 6), running)
        for account_id in users:
            await _verified(settings, account_id, running)

        home.stop()  # shard 0's server goes away
        for user, password, n in users.values():
            dovecot.append(user, password, "INBOX", mail[n * 10 + 6 : n * 10 + 8])
        # Shard 1's accounts go on: their new mail arrives while shard 0 is down.
        await _wait_places(shards, dict.fromkeys(on[1], 8), running)
        for account_id in on[1]:
            await _verified(settings, account_id, running)
        assert not running.done()

        home.start()  # back: shard 0's accounts resume and catch up
        await _wait_places(shards, dict.fromkeys(users, 8), running)
        for account_id in users:
            await _verified(settings, account_id, running)
        assert "identical" in capsys.readouterr().out
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await supervisor.close()
        await shards.dispose()

    # A shard's counters survive its server's restart, empty tables' too (MariaDB 10.2.4+ keeps them).
    other.stop()
    other.start()
    engine = create_engine(other.url(name), pool_size=1)
    try:
        counters = await next_ids(engine)
    finally:
        await engine.dispose()
    assert {t: shard_of(n) for t, n in counters.items()} == dict.fromkeys(counters, 1)
