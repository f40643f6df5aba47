"""`inboxql account add --oauth2 NAME --refresh-token-stdin` end to end (subprocesses, real Dovecot and Postfix, the
test authorization server), and sending with an access token through Postfix's SASL, which is Dovecot's."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from schema.crypto import CredentialBox, Purpose
from schema.db import session_factory
from schema.models import Account
from synccore.smtp import SmtpAuthFailed, SmtpEndpoint, check_login, submit
from tests.imap.test_client import message
from tests.oauth2.conftest import CLIENT, PROVIDER
from tests.oauth2server import AuthServer
from tests.test_cli import cli_env, guard_dir, inboxql

__all__ = ["cli_env", "guard_dir"]  # fixtures used below

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(cli_env: dict[str, str], provider_env: dict[str, str]) -> dict[str, str]:
    # This checkout's packages first: the console script's interpreter would otherwise import the installed ones.
    return {**cli_env, **provider_env, "PYTHONPATH": os.pathsep.join([str(ROOT), cli_env["PYTHONPATH"]])}


async def rows_of(engine: AsyncEngine, user: str) -> list[Account]:
    async with session_factory(engine)() as s:
        return list(await s.scalars(select(Account).where(Account.imap_username == user)))


async def test_account_add_with_oauth2_checks_the_logins_stores_the_grant_and_syncs(
    env: dict[str, str],
    engine: AsyncEngine,
    credential_box: CredentialBox,
    oauth_dovecot: DovecotServer,
    oauth_postfix: PostfixServer,
    auth_server: AuthServer,
    oauth_user: tuple[str, str],
) -> None:
    user, password = oauth_user
    oauth_dovecot.append(user, password, "INBOX", [message(1)])
    granted = auth_server.grant(CLIENT[0], user)
    assert granted.refresh_token is not None
    added = await inboxql(
        env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{oauth_dovecot.port}",
        "--oauth2", PROVIDER, "--refresh-token-stdin", "--smtp-url", f"smtp://127.0.0.1:{oauth_postfix.port}",
        "--tls-ca-file", str(oauth_dovecot.ca_file), stdin=granted.refresh_token + "\n",
    )  # fmt: skip
    assert added.code == 0, added.stderr
    [row] = await rows_of(engine, user)
    assert added.stdout.strip() == str(row.id)
    assert (row.oauth2_provider, row.imap_password, row.sync_state) == (PROVIDER, None, "pending")
    # The refresh token rotated when it was first used: the new one is stored, the one given is spent.
    assert row.oauth2_refresh_token is not None
    stored = credential_box.open(row.oauth2_refresh_token, Purpose.ACCOUNT)
    assert stored != granted.refresh_token
    assert auth_server.state.by_refresh(stored) is not None
    for text in (added.stdout, added.stderr):
        assert granted.refresh_token not in text
        assert stored not in text
    assert f"user=<{user}>, method=OAUTHBEARER" in oauth_dovecot.log_file.read_text()

    synced = await inboxql(env, "sync", "--once", "--account", str(row.id))
    assert synced.code == 0, synced.stderr
    [row] = await rows_of(engine, user)
    assert row.sync_state == "ready"
    listed = await inboxql(env, "account", "list")
    assert f"{row.id}\t" in listed.stdout
    assert stored not in listed.stdout + synced.stderr


async def test_a_refused_refresh_token_stores_nothing(
    env: dict[str, str], engine: AsyncEngine, oauth_dovecot: DovecotServer, oauth_user: tuple[str, str]
) -> None:
    user, _ = oauth_user
    done = await inboxql(
        env, "account", "add", "--imap-url", f"imap://{user}@127.0.0.1:{oauth_dovecot.port}",
        "--oauth2", PROVIDER, "--refresh-token-stdin", stdin="rt-not-one-we-issued\n",
    )  # fmt: skip
    assert done.code == 1
    assert "refused the refresh token (invalid_grant); nothing was stored" in done.stderr
    assert "rt-not-one-we-issued" not in done.stderr
    assert await rows_of(engine, user) == []


async def test_oauth2_options_go_together(env: dict[str, str], oauth_dovecot: DovecotServer) -> None:
    url = f"imap://someone@127.0.0.1:{oauth_dovecot.port}"
    alone = await inboxql(env, "account", "add", "--imap-url", url, "--oauth2", PROVIDER, stdin="x\n")
    assert alone.code == 2
    assert "--oauth2 needs --refresh-token-stdin" in alone.stderr
    unknown = await inboxql(
        env, "account", "add", "--imap-url", url, "--oauth2", "nosuch", "--refresh-token-stdin", stdin="x\n"
    )
    assert unknown.code == 2
    assert "INBOXQL_OAUTH2_NOSUCH_CLIENT_ID" in unknown.stderr


async def test_sending_with_an_access_token_through_postfix_and_dovecots_sasl(
    oauth_dovecot: DovecotServer, oauth_postfix: PostfixServer, auth_server: AuthServer, oauth_user: tuple[str, str]
) -> None:
    """Postfix asks Dovecot's auth service, which offers XOAUTH2 and OAUTHBEARER through its oauth2 passdb: a live
    token sends (and the message arrives), a revoked one is refused as a login failure."""
    user, _ = oauth_user
    token = auth_server.grant(CLIENT[0], user)
    endpoint = SmtpEndpoint(
        oauth_postfix.host, oauth_postfix.port, "starttls", user, ca_file=str(oauth_dovecot.ca_file),
        oauth2_token=token.access_token,
    )  # fmt: skip
    raw = message(7).replace(b"you@example.com", oauth_dovecot.address(user).encode())
    result = await submit(endpoint, oauth_dovecot.address(user), [oauth_dovecot.address(user)], raw)
    assert result.accepted == (oauth_dovecot.address(user),)
    for _ in range(100):
        found = oauth_dovecot.doveadm("search", "-u", user, "mailbox", "INBOX", "ALL")
        if found.strip():
            break
        await asyncio.sleep(0.1)
    assert found.strip(), "the message did not arrive"
    auth_server.revoke_access(token.access_token)
    with pytest.raises(SmtpAuthFailed):
        await check_login(endpoint)
