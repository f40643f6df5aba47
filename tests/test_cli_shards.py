"""The command line over two shards (INBOXQL_SHARDS), run as a user runs it: `db upgrade` prepares both, `account
add` places each new account on the least loaded shard and says which, and `sync --once`, `verify`, `account
list` and `account remove` find an account on whichever shard holds it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from inboxql.devmail import DovecotServer
from schema.db import drop_database
from schema.shards import shard_of
from tests.conftest import fresh_database_url, new_user
from tests.test_cli import cli_env, guard_dir, inboxql
from tests.test_cli_accounts import add_account, mail

__all__ = ["cli_env", "guard_dir"]  # fixtures used by the tests below


@pytest.fixture
async def sharded_env(cli_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    urls = (fresh_database_url("inboxql_cli_shard0"), fresh_database_url("inboxql_cli_shard1"))
    try:
        yield {**cli_env, "INBOXQL_DATABASE_URL": urls[0], "INBOXQL_SHARDS": f"1={urls[1]}"}
    finally:
        for url in urls:
            await drop_database(url)


async def test_accounts_spread_over_two_shards_and_each_syncs_and_verifies(
    sharded_env: dict[str, str], dovecot: DovecotServer
) -> None:
    upgraded = await inboxql(sharded_env, "db", "upgrade")
    assert upgraded.code == 0, upgraded.stderr
    ids = []
    for n in range(2):
        user, password = new_user(dovecot)
        dovecot.append(user, password, "INBOX", [mail(f"note {n}.{i}") for i in range(3)])
        done = await inboxql(
            sharded_env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{dovecot.port}",
            "--password-stdin", stdin=password + "\n",
        )  # fmt: skip
        assert done.code == 0, done.stderr
        account_id = int(done.stdout)  # stdout stays the bare id
        assert f"account {account_id} is on shard {shard_of(account_id)}" in done.stderr
        ids.append(account_id)
    assert [shard_of(i) for i in ids] == [0, 1]  # the least loaded, the lowest number on a tie

    for account_id in ids:
        synced = await inboxql(sharded_env, "sync", "--once", "--account", str(account_id))
        assert synced.code == 0, synced.stderr
        verified = await inboxql(sharded_env, "verify", str(account_id))
        assert (verified.code, verified.stdout.strip()) == (0, "identical"), verified.stdout
    listed = await inboxql(sharded_env, "account", "list")
    assert [int(line.split("\t")[0]) for line in listed.stdout.splitlines()] == ids
    shown = await inboxql(sharded_env, "status")
    assert shown.code == 0, shown.stderr
    assert [int(line.split("\t")[0]) for line in shown.stdout.splitlines()] == ids

    # Tokens live on shard 0 and grant accounts of any shard, each looked for on its own shard.
    both = await inboxql(sharded_env, "token", "create", "--account", str(ids[0]), "--account", str(ids[1]))
    assert both.code == 0, both.stderr
    only_0 = await inboxql(sharded_env, "token", "create", "--account", str(ids[0]))
    assert only_0.code == 0, only_0.stderr
    for unknown in (ids[1] + 1000, 1 << 48 | 1 << 40, 5 << 48 | 1):  # not on shard 1; shard 5 not configured
        refused = await inboxql(sharded_env, "token", "create", "--account", str(ids[0]), "--account", str(unknown))
        assert refused.code == 1
        assert f"no such account: {unknown}" in refused.stderr
    # A shard that cannot be reached cannot vouch for its accounts: refused, clearly.
    closed = {**sharded_env, "INBOXQL_SHARDS": sharded_env["INBOXQL_SHARDS"] + " 2=mysql+asyncmy://root@127.0.0.1:1/x"}
    refused = await inboxql(closed, "token", "create", "--account", str(ids[0]), "--account", str(2 << 48 | 1))
    assert refused.code == 1
    assert "shard 2 is unreachable" in refused.stderr
    assert "Traceback" not in refused.stderr
    tokens_listed = await inboxql(sharded_env, "token", "list")
    grants = [line.split("\t")[4] for line in tokens_listed.stdout.splitlines()]
    assert grants == [f"accounts {ids[0]},{ids[1]}", f"accounts {ids[0]}"]

    # Removing shard 1's account revokes the token granting it, on shard 0, and its grants go with it.
    removed = await inboxql(sharded_env, "account", "remove", str(ids[1]), "--yes")
    assert removed.code == 0, removed.stderr
    assert "tokens revoked: 1\n" in removed.stdout
    tokens_listed = await inboxql(sharded_env, "token", "list", "--all")
    lines = [line.split("\t") for line in tokens_listed.stdout.splitlines()]
    assert [(f[0], f[4], f[-1].startswith("revoked")) for f in lines] == [
        ("1", f"accounts {ids[0]}", True),
        ("2", f"accounts {ids[0]}", False),
    ]
    listed = await inboxql(sharded_env, "account", "list")
    assert [int(line.split("\t")[0]) for line in listed.stdout.splitlines()] == ids[:1]
    # The next account goes where there is room: shard 1 is empty again.
    user, password = new_user(dovecot)
    assert shard_of(await add_account(sharded_env, dovecot, user, password)) == 1


async def test_an_account_of_a_shard_not_configured_is_a_clear_error(cli_env: dict[str, str]) -> None:
    done = await inboxql(cli_env, "verify", str(3 << 48 | 7))
    assert done.code == 2
    assert "shard 3 is not configured" in done.stderr
