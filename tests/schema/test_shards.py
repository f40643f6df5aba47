"""Shards (schema.shards): the shard number is in every id's high bits, `inboxql db upgrade` prepares every shard's
counters, a new account goes to the least loaded shard, and the configuration is checked with clear errors."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, update

from gateway.ids import from_global, to_global
from inboxql import commands
from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine, drop_database
from schema.migrate import upgrade
from schema.models import Account, Folder
from schema.settings import MAX_SHARD, Settings, SettingsError, parse_shards
from schema.shards import SHARD_BITS, ShardError, Shards, first_id, prepare_ids, shard_of
from tests.conftest import REDIS_URL, fresh_database_url
from tests.schema.support import next_ids

HOME_URL = "mysql+asyncmy://root@db0:3306/inboxql"


@pytest.mark.parametrize(
    ("object_id", "shard"),
    [(1, 0), (2**SHARD_BITS - 1, 0), (first_id(1), 1), (first_id(2) + 12345, 2), (first_id(MAX_SHARD), MAX_SHARD)],
)
def test_an_id_decodes_to_the_shard_that_made_it(object_id: int, shard: int) -> None:
    assert shard_of(object_id) == shard


def test_every_shard_s_ids_stay_exact_as_json_numbers() -> None:
    """Below 2**53: a JavaScript client reads the change log's ids (numbers in JSON) exactly."""
    assert first_id(MAX_SHARD) + 2**SHARD_BITS - 1 < 2**53


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ()),
        ("2=mysql+asyncmy://root@db2/inboxql", ((2, "mysql+asyncmy://root@db2/inboxql"),)),
        (
            " 2=mysql+asyncmy://root@db2/a,1=mysql+asyncmy://root@db1/a ",
            ((1, "mysql+asyncmy://root@db1/a"), (2, "mysql+asyncmy://root@db2/a")),
        ),
    ],
)
def test_inboxql_shards_lists_numbered_urls(value: str, expected: tuple[tuple[int, str], ...]) -> None:
    assert parse_shards(value, HOME_URL) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("mysql+asyncmy://root@db1/inboxql", "is not NUMBER=URL"),
        ("0=mysql+asyncmy://root@db1/inboxql", "shard 0 is INBOXQL_DATABASE_URL"),
        (f"{MAX_SHARD + 1}=mysql+asyncmy://root@db1/inboxql", f"not within 1..{MAX_SHARD}"),
        ("1=mysql+asyncmy://root@db1/a 1=mysql+asyncmy://root@db2/a", "listed twice"),
        ("1=postgresql://db1/inboxql", "shard 1: INBOXQL_DATABASE_URL must be a mysql+asyncmy:// URL"),
        (f"1={HOME_URL}", "already listed"),
    ],
)
def test_a_wrong_shard_list_is_refused_saying_why(value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)):
        Settings.from_env({"INBOXQL_DATABASE_URL": HOME_URL, "INBOXQL_SHARDS": value, "INBOXQL_SECRET_KEY": "k"})


def test_one_server_is_shard_0_alone() -> None:
    settings = Settings.from_env({"INBOXQL_DATABASE_URL": HOME_URL, "INBOXQL_SECRET_KEY": "k"})
    assert settings.shard_urls() == {0: HOME_URL}


@pytest.fixture
async def two_databases() -> AsyncIterator[tuple[str, str]]:
    """Two empty databases of their own, made and migrated by `inboxql db upgrade` as shards 0 and 2."""
    urls = (fresh_database_url("inboxql_shard0"), fresh_database_url("inboxql_shard2"))
    try:
        yield urls
    finally:
        for url in urls:
            await drop_database(url)


def sharded(urls: tuple[str, str]) -> Settings:
    return Settings(
        database_url=urls[0], redis_url=REDIS_URL, secret_key=secrets.token_urlsafe(32), shards=((2, urls[1]),)
    )


async def new_account(shards: Shards, box: CredentialBox, shard: int) -> int:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", f"u{secrets.token_hex(4)}")
    return await accounts.create(shards.store(shard), box, "a@example.test", endpoint, "pw", shard=shard)


async def test_db_upgrade_prepares_every_shard_and_ids_made_on_shard_2_decode_to_shard_2(
    two_databases: tuple[str, str],
) -> None:
    settings = sharded(two_databases)
    assert await commands.db_upgrade(settings) == 0
    assert await commands.db_upgrade(settings) == 0  # again: nothing changes
    box = CredentialBox(settings.secret_key)
    shards = Shards.of(settings, pool_size=1)
    try:
        home = await new_account(shards, box, 0)
        far = await new_account(shards, box, 2)
        assert (shard_of(home), shard_of(far)) == (0, 2)
        assert home < 2**SHARD_BITS
        # The account's objects too: a folder made on shard 2.
        async with shards.store(2).unit(far) as uow:
            folder = Folder(account_id=far, name="INBOX", attributes="")
            uow.session.add(folder)
            await uow.session.flush()
        assert shard_of(folder.id) == 2
        # So does the global id the gateway hands out, with no lookup.
        assert shard_of(from_global(to_global("Account", far))[1]) == 2
        # Every numbered table of shard 2 counts from its range.
        counters = await next_ids(shards.engine(2))
        assert counters
        assert {t: shard_of(n) for t, n in counters.items()} == dict.fromkeys(counters, 2)
    finally:
        await shards.dispose()


async def test_an_account_on_a_shard_never_prepared_is_refused_and_nothing_is_stored(
    two_databases: tuple[str, str],
) -> None:
    """A shard migrated by hand but not prepared would number its accounts as shard 0's: refused, rolled back."""
    settings = sharded(two_databases)
    for url in two_databases:
        await create_database(url)
        await asyncio.to_thread(upgrade, url)
    shards = Shards.of(settings, pool_size=1)
    try:
        with pytest.raises(ShardError, match="inboxql db upgrade"):
            await new_account(shards, CredentialBox(settings.secret_key), 2)
        async with shards.engine(2).connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(Account)) == 0
    finally:
        await shards.dispose()


async def test_db_upgrade_refuses_a_shard_listed_under_another_number(two_databases: tuple[str, str]) -> None:
    settings = sharded(two_databases)
    assert await commands.db_upgrade(settings) == 0
    shards = Shards.of(settings, pool_size=1)
    try:
        await new_account(shards, CredentialBox(settings.secret_key), 2)
    finally:
        await shards.dispose()
    engine = create_engine(two_databases[1], pool_size=1)
    try:
        with pytest.raises(ShardError, match="configured as shard 1 holds ids of shard 2"):
            await prepare_ids(engine, 1)
    finally:
        await engine.dispose()
    swapped = Settings(database_url=two_databases[1], redis_url=REDIS_URL, secret_key="k")
    assert await commands.db_upgrade(swapped) == 1


async def test_a_new_account_goes_to_the_shard_with_the_fewest_accounts(two_databases: tuple[str, str]) -> None:
    settings = sharded(two_databases)
    assert await commands.db_upgrade(settings) == 0
    box = CredentialBox(settings.secret_key)
    shards = Shards.of(settings, pool_size=1)
    try:
        placed = []
        for _ in range(4):
            shard = await accounts.place(shards)
            placed.append(shard)
            await new_account(shards, box, shard)
        assert placed == [0, 2, 0, 2]  # a tie goes to the lowest number
        # An account being removed does not count.
        async with shards.engine(0).begin() as conn:
            await conn.execute(update(Account).values(sync_state=accounts.REMOVING))
        assert await accounts.place(shards) == 0
        assert await accounts.counts(shards) == {0: 0, 2: 2}
    finally:
        await shards.dispose()


async def test_one_shard_is_placed_on_without_a_query() -> None:
    shards = Shards({0: "mysql+asyncmy://root@127.0.0.1:1/nowhere"}, pool_size=1)
    try:
        assert await accounts.place(shards) == 0
    finally:
        await shards.dispose()


async def test_an_unreachable_shard_gets_no_new_account(two_databases: tuple[str, str]) -> None:
    settings = sharded(two_databases)
    assert await commands.db_upgrade(settings) == 0
    shards = Shards({0: two_databases[0], 1: "mysql+asyncmy://root@127.0.0.1:1/nowhere"}, pool_size=1)
    try:
        await new_account(shards, CredentialBox(settings.secret_key), 0)
        assert await accounts.place(shards) == 0
    finally:
        await shards.dispose()
